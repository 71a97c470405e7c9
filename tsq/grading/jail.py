"""The operating-system boundary around model-written programs: a bubblewrap namespace jail.

Each program runs in fresh mount, PID, network, IPC and UTS namespaces (`bwrap`, Debian's `bubblewrap`):
it sees a read-only view of /usr, /lib*, /bin and the Python interpreter's own prefix (its standard
library; site-packages are hidden), a private /proc that lists only its own processes, a minimal /dev,
and one writable directory, /work, a tmpfs capped at `disk_mb`. It runs as the unprivileged uid 65534
without capabilities and with `no_new_privs`; rlimits bound CPU time, memory, file size and the number
of processes (threads count). When the program's first process ends, or the grader kills the jail at
the timeout, the kernel kills every process left in its PID namespace (a `setsid` child included).

As root (this repository's machines), bwrap creates the namespaces itself and `setpriv` drops to uid
65534 inside, so the process limit counts the jail's processes only. As another user, bwrap needs
unprivileged user namespaces and maps uid 65534 to the caller, whose own processes then count against
the process limit too (the limit is raised by their number); that path is not exercised here.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
WORK = "/work"
RUNNER_INSIDE = "/sandbox/runner.py"
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")


@dataclass(frozen=True)
class JailLimits:
    """Per program: CPU seconds, address space, largest file written, /work size, processes and threads."""

    cpu_s: int
    memory_mb: int
    file_size_mb: int
    disk_mb: int
    processes: int

    def apply(self) -> None:
        """Set the rlimits; runs in the child between fork and exec (inherited by everything in the jail)."""
        for limit, value in (
            (resource.RLIMIT_CPU, self.cpu_s),
            (resource.RLIMIT_AS, self.memory_mb * 2**20),
            (resource.RLIMIT_FSIZE, self.file_size_mb * 2**20),
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_NPROC, self.processes + _own_processes()),
        ):
            resource.setrlimit(limit, (value, value))


def _own_processes() -> int:
    """Tasks of the caller's uid that count against RLIMIT_NPROC in the jail (none when root drops to 65534)."""
    if os.geteuid() == 0:
        return 0
    uid, count = os.getuid(), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def interpreter() -> tuple[str, str]:
    """(the real interpreter binary, the prefix that holds it and its standard library)."""
    prefix = os.path.realpath(sys.base_prefix)
    binary = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    if not binary.startswith(prefix + os.sep):
        binary = os.path.realpath(sys.executable)
    return binary, prefix


def jail_argv(
    bwrap: str, program: list[str], binds: dict[str, str], limits: JailLimits, env: dict[str, str]
) -> list[str]:
    """The bwrap command line that runs `program` (paths as seen inside) with `binds` (host file -> path in
    /work or /sandbox, read-only) and only `env` as its environment."""
    _, prefix = interpreter()
    argv = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    argv += ["--die-with-parent", "--new-session"]
    root = os.geteuid() == 0
    if not root:
        argv += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    for path in SYSTEM_DIRS:
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    # mount points bwrap creates are 0700; the interpreter's parents and /sandbox must be searchable by 65534
    for parent in [*reversed(Path(prefix).parents), Path(RUNNER_INSIDE).parent]:
        if str(parent) != "/":
            argv += ["--perms", "0755", "--dir", str(parent)]
    argv += ["--ro-bind", prefix, prefix]
    site = sysconfig.get_paths(vars={"base": prefix, "platbase": prefix})["purelib"]
    if os.path.isdir(site):
        argv += ["--tmpfs", site]  # the interpreter and its standard library only, no installed packages
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "0777", "--size", str(limits.disk_mb * 2**20), "--tmpfs", WORK]
    for host, inside in binds.items():
        argv += ["--ro-bind", host, inside]
    argv += ["--chdir", WORK, "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    if root:  # drop to an unprivileged uid with no capabilities inside the namespaces
        argv += ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        argv += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return argv + program


@functools.cache
def jail_problem(bwrap: str = "bwrap") -> str | None:
    """Why the jail cannot run here (None when a trial program ran in it as uid 65534)."""
    path = shutil.which(bwrap)
    if path is None:
        return f"{bwrap!r} is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    binary, _ = interpreter()
    limits = JailLimits(cpu_s=10, memory_mb=1024, file_size_mb=1, disk_mb=1, processes=8)
    argv = jail_argv(path, [binary, "-I", "-c", "import os; print(os.getuid())"], {}, limits, {"PATH": "/usr/bin"})
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, preexec_fn=limits.apply)
    except (OSError, subprocess.SubprocessError) as err:
        return f"bwrap could not start: {err}"
    if done.returncode != 0 or done.stdout.strip() != str(NOBODY):
        return f"bwrap failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
    return None


def runner_binds(runner: Path, files: dict[str, Path]) -> dict[str, str]:
    """Read-only binds: the runner at RUNNER_INSIDE and each of `files` (name -> host path) in /work."""
    return {str(runner): RUNNER_INSIDE, **{str(host): f"{WORK}/{name}" for name, host in files.items()}}
