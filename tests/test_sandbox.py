"""The code grader's jail holds against programs that first defeat the in-interpreter audit hook.

Each probe starts with `DEFEAT_HOOK` (what a hostile program can do: empty the runner's deny-lists and
make its path check always pass), then tries an escape; the test checks the host, not the program's
word. Probes follow a red-team's list: subprocesses and shells, network, processes that outlive grading,
other processes' environments and signals, files outside the work directory (absolute, relative after
chdir, dir_fd, fifo, symlink, ..), disk, fork and thread bombs, output floods.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tsq.grading.code import CodeGrader
from tsq.grading.jail import NOBODY, jail_problem

pytestmark = pytest.mark.skipif(jail_problem() is not None, reason=f"no bubblewrap jail here: {jail_problem()}")

DEFEAT_HOOK = """
import sys, os
_runner = sys.modules["__main__"]
_runner.DENIED.clear(); _runner.PATH_EVENTS.clear()
_runner._inside.__code__ = (lambda path: True).__code__
"""


@pytest.fixture(scope="module")
def grader():
    return CodeGrader(timeout_s=3, memory_mb=512, disk_mb=8, processes=16, file_size_mb=2)


def run(grader, code: str, stdin: str = ""):
    return grader.run(DEFEAT_HOOK + code, stdin)


def jailed_processes() -> list[int]:
    """Processes of the jail's uid still alive on the host."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == NOBODY:
                out.append(int(pid))
        except OSError:
            continue
    return out


def test_the_hook_is_defeated_so_the_jail_is_what_holds(grader):
    result = run(grader, "import subprocess\nprint(subprocess.run(['echo', 'spawned'], capture_output=True).stdout)")
    assert result.status == "ok" and "spawned" in result.stdout  # no audit hook left: only the jail remains
    assert run(grader, "print(os.getuid(), os.getgid())").stdout.split() == [str(NOBODY), str(NOBODY)]


def test_a_shell_cannot_write_outside_the_jail(grader, tmp_path):
    target = Path("/tmp") / f"tsq-escape-{uuid.uuid4().hex}"
    code = f"os.system('echo x > {target}; echo y > {tmp_path}/y; echo z > /usr/z')\nprint(os.listdir('/'))"
    result = run(grader, code)
    assert result.status == "ok"
    assert not target.exists() and not (tmp_path / "y").exists() and not Path("/usr/z").exists()
    assert "tmp" not in result.stdout  # the host's /tmp is not even visible


def test_spawned_processes_see_only_the_jails_own_processes(grader):
    code = (
        "import subprocess\n"
        "shell = subprocess.Popen(['/bin/sh', '-c', 'ls -d /proc/[0-9]* | wc -l'], stdout=subprocess.PIPE)\n"
        "print('procs', shell.communicate()[0].decode().strip())\n"
    )
    result = run(grader, code)
    assert result.status == "ok" and int(result.stdout.split()[-1]) <= 5  # the host runs hundreds


def test_no_network_even_to_the_hosts_loopback(grader):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = (
        "import socket\ns = socket.socket(); s.settimeout(2)\n"
        f"try:\n    s.connect(('127.0.0.1', {port})); print('connected')\n"
        "except OSError as e:\n    print('refused', e)\n"
        "try:\n    socket.create_connection(('1.1.1.1', 80), timeout=2); print('internet')\n"
        "except OSError as e:\n    print('no internet', e)\n"
    )
    result = run(grader, code)
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()
    assert "refused" in result.stdout and "connected" not in result.stdout and "no internet" in result.stdout


@pytest.mark.parametrize("ignore_term", [False, True])
def test_no_process_outlives_grading(grader, ignore_term):
    marker = uuid.uuid4().hex
    child = (
        f"import signal, time; {'signal.signal(signal.SIGTERM, signal.SIG_IGN); ' if ignore_term else ''}time.sleep(60)"
    )
    code = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}, '{marker}'], start_new_session=True)\n"
        f"subprocess.Popen(['setsid', 'sleep', '61'])\n"
        "print('started')\n"
    )
    result = run(grader, code)
    assert result.stdout.strip() == "started"
    time.sleep(0.3)
    assert jailed_processes() == []  # normal exit: the jail's whole PID namespace is gone


def test_a_timed_out_program_leaves_nothing_running(grader):
    code = "import subprocess\nsubprocess.Popen(['setsid', 'sleep', '62'])\nwhile True:\n    pass\n"
    assert run(grader, code).status == "timeout"
    time.sleep(0.3)
    assert jailed_processes() == []


def test_other_processes_environments_and_files_are_out_of_reach(grader, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "secret-wandb-key")
    private = tmp_path / "private.txt"
    private.write_text("secret-file-content")
    private.chmod(0o600)
    code = (
        "found = []\n"
        "for pid in [p for p in os.listdir('/proc') if p.isdigit()] + [str(os.getppid())]:\n"
        "    try:\n        found.append(open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace'))\n"
        "    except OSError as e:\n        found.append(str(e))\n"
        f"for path in [{str(private)!r}, '/root/.bashrc', '/etc/shadow', '../../etc/passwd']:\n"
        "    try:\n        found.append(open(path).read())\n"
        "    except OSError as e:\n        found.append(type(e).__name__)\n"
        "print(found)\n"
    )
    result = run(grader, code)
    assert result.status == "ok"
    assert "secret-wandb-key" not in result.stdout and "secret-file-content" not in result.stdout
    assert "root:" not in result.stdout


def test_relative_dir_fd_fifo_and_symlink_writes_stay_inside(grader, tmp_path):
    name = f"tsq-escape-{uuid.uuid4().hex}"
    code = (
        "import stat\nresults = []\n"
        "def attempt(f):\n    try:\n        f(); results.append('ok')\n    except OSError as e:\n"
        "        results.append(type(e).__name__)\n"
        "os.symlink('/tmp', 'out')\n"
        f"attempt(lambda: open('out/{name}', 'w').write('x'))\n"
        f"attempt(lambda: os.mkfifo('/tmp/{name}'))\n"
        f"attempt(lambda: os.mknod('/usr/{name}', stat.S_IFREG))\n"
        f"attempt(lambda: os.open('{name}', os.O_CREAT | os.O_WRONLY, dir_fd=os.open('/usr', os.O_RDONLY)))\n"
        f"os.chdir('/'); attempt(lambda: open('usr/{name}', 'w'))\n"
        f"attempt(lambda: open('{tmp_path}/{name}', 'w'))\n"
        "print(results)\n"
    )
    result = run(grader, code)
    assert result.status == "ok" and "'ok'" not in result.stdout, result.stdout
    for where in (Path("/tmp"), Path("/usr"), tmp_path):
        assert not (where / name).exists()


def test_signals_cannot_reach_host_processes(grader):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        code = (
            "import signal\nout = []\n"
            f"for f in (lambda: os.kill({victim.pid}, signal.SIGKILL), lambda: os.pidfd_open({victim.pid})):\n"
            "    try:\n        f(); out.append('ok')\n    except OSError as e:\n        out.append(type(e).__name__)\n"
            "print(out)\n"
        )
        result = run(grader, code)
        assert "'ok'" not in result.stdout and victim.poll() is None  # still alive
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()


def test_disk_output_fork_and_thread_bombs_are_bounded(grader):
    disk = run(grader, "open('big', 'wb').write(b'0' * (64 * 2**20))\nprint('wrote')")
    assert disk.status == "error" and "wrote" not in disk.stdout  # /work holds 8 MB here
    flood = run(grader, "while True:\n    print('x' * 4096)")
    assert flood.status == "error" and len(flood.stdout) <= 2**20  # RLIMIT_FSIZE on the output file
    start = time.monotonic()
    forks = run(
        grader, "try:\n    while True:\n        os.fork()\nexcept OSError as e:\n    print('limit', type(e).__name__)\n"
    )
    assert time.monotonic() - start < 10 and "limit BlockingIOError" in forks.stdout  # RLIMIT_NPROC (16 here)
    threads = run(grader, "import threading, time\nn = 0\ntry:\n    while True:\n"
                          "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start(); n += 1\n"
                          "except RuntimeError:\n    print('threads', n)\n")  # fmt: skip
    assert threads.status == "ok" and int(threads.stdout.split()[-1]) < 16
    time.sleep(0.3)
    assert jailed_processes() == []


def test_grading_refuses_to_start_without_the_jail_unless_told(tmp_path):
    with pytest.raises(RuntimeError, match="apt-get install bubblewrap.*code_grader.sandbox=audit_hook"):
        CodeGrader(bwrap=str(tmp_path / "no-bwrap"))
    weak = CodeGrader(bwrap=str(tmp_path / "no-bwrap"), sandbox="audit_hook")
    assert weak.run("print(6 * 7)").stdout == "42\n"
