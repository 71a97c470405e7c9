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
from tsq.grading.jail import NOBODY, cgroup_problem, jail_problem

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


SYSCALLS = {"x86_64": {"add_key": 248, "keyctl": 250}, "aarch64": {"add_key": 217, "keyctl": 219}}
KEYCTL_READ, KEY_SPEC_SESSION_KEYRING = 11, -3


@pytest.mark.skipif(os.uname().machine not in SYSCALLS, reason="syscall numbers known for x86_64 and aarch64 only")
def test_the_graders_session_keyring_is_out_of_reach(grader):
    """A program read, changed and cleared the grading user's session keyring (Kerberos tickets live there)."""
    import ctypes

    numbers = SYSCALLS[os.uname().machine]
    libc = ctypes.CDLL(None, use_errno=True)
    secret = b"secret-ticket"
    key = libc.syscall(numbers["add_key"], b"user", b"tsq-probe", secret, len(secret), KEY_SPEC_SESSION_KEYRING)
    if key < 0:
        pytest.skip(f"this session has no usable keyring (add_key: errno {ctypes.get_errno()})")
    code = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nout = []\n"
        f"buf = ctypes.create_string_buffer(64)\n"
        f"for args in [(0, -3, 0), ({KEYCTL_READ}, {key}, buf, 64), (7, -3), (1, None), (6, {key})]:\n"
        f"    r = libc.syscall({numbers['keyctl']}, *args)\n"
        "    out.append((r, ctypes.get_errno()))\n"
        f"out.append(libc.syscall({numbers['add_key']}, b'user', b'planted', b'x', 1, -3))\n"
        "print(out, buf.raw)\n"
    )
    result = run(grader, code)
    assert result.status == "ok", result.stderr
    calls = eval(result.stdout.split(" b'")[0])  # noqa: S307 - the probe's own list
    assert all(r == -1 and err == 1 for r, err in calls[:-1]) and calls[-1] == -1  # EPERM, every key call
    assert "secret-ticket" not in result.stdout
    buf = ctypes.create_string_buffer(64)
    assert libc.syscall(numbers["keyctl"], KEYCTL_READ, key, buf, 64) == len(secret) and buf.raw[:13] == secret
    libc.syscall(numbers["keyctl"], 3, key)  # KEYCTL_REVOKE: leave the session as it was


def test_no_nested_user_namespace_so_no_private_mount(grader):
    """Inside a user namespace of its own a program mounted a tmpfs and wrote 2 GB against disk_mb."""
    code = (
        "import ctypes, subprocess\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "r = libc.unshare(0x10000000)\nprint('unshare', r, ctypes.get_errno())\n"
        "p = subprocess.run(['unshare', '-Urm', 'sh', '-c', 'mount -t tmpfs none /tmp && echo mounted'],"
        " capture_output=True, text=True)\nprint('tool', p.returncode, p.stdout.strip())\n"
    )
    result = run(grader, code)
    assert "unshare -1 1" in result.stdout  # EPERM
    assert "mounted" not in result.stdout and "tool 0" not in result.stdout


NO_CGROUPS = pytest.mark.skipif(
    cgroup_problem() is not None, reason=f"programs get no cgroups of their own here: {cgroup_problem()}"
)


@NO_CGROUPS
def test_memory_is_bounded_for_the_whole_program_not_per_process(grader):
    """6 children of 1 GB each once reached 5.4 GB at memory_mb=1024; here 4 children try 200 MB at 512."""
    child = "b = bytearray(200 * 2**20); import time; time.sleep(1.5); print('held')"
    code = (
        "import subprocess, sys\n"
        f"procs = [subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE) for _ in range(4)]\n"
        "print('held', sum(p.communicate()[0].strip() == b'held' for p in procs))\n"
    )
    result = run(grader, code)
    held = int(result.stdout.split()[-1]) if result.stdout.startswith("held") else 0
    assert held <= 2  # 512 MB (+8 MB of /work) for all of them together


@pytest.mark.skipif(os.geteuid() != 0, reason="/work's inode bound is mounted by the jail as root only")
def test_an_inode_flood_stops_at_the_inode_bound(grader):
    code = (
        "n = 0\ntry:\n    while n < 200000:\n        open(f'f{n}', 'w').close(); n += 1\n"
        "except OSError as e:\n    print('stopped', n, e.errno)\n"
    )
    result = run(grader, code)
    assert result.stdout.startswith("stopped") and int(result.stdout.split()[1]) <= 4096, result.stdout


@NO_CGROUPS
def test_the_process_limit_is_each_programs_own(grader):
    """The limit counted every uid-65534 process on the host: a correct threaded program was graded wrong
    while another program held processes."""
    from concurrent.futures import ThreadPoolExecutor

    holder = (
        "import subprocess, sys, time\n"
        "ps = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(4)']) for _ in range(12)]\n"
        "print('holding', len(ps)); time.sleep(2.5)\n"
    )
    threaded = (  # 10 threads alive at once (a barrier), within its own limit of 16
        "import threading\nout, meet = [], threading.Barrier(10)\n"
        "def work(i):\n    meet.wait(); out.append(i)\n"
        "ts = [threading.Thread(target=work, args=(i,)) for i in range(10)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\nprint(sorted(out) == list(range(10)))\n"
    )
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(run, grader, holder)
        time.sleep(1.5)
        second = run(grader, threaded)
    assert first.result().stdout.startswith("holding 12")
    assert second.status == "ok" and second.stdout.strip() == "True", second


@pytest.mark.parametrize("limits", [{"memory_mb": 1}, {"timeout_s": 0.001}, {"processes": 1, "memory_mb": 512}])
def test_limits_too_tight_for_the_smallest_program_are_refused_at_start(limits):
    with pytest.raises(ValueError, match=r"too tight for `print\(6 \* 7\)` to run"):
        CodeGrader(**limits)
