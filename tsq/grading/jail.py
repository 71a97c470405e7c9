"""The operating-system boundary around model-written programs: a bubblewrap namespace jail.

Each program runs in fresh mount, PID, network, IPC and UTS namespaces (`bwrap`, Debian's `bubblewrap`):
it sees a read-only view of /usr, /lib*, /bin and the Python interpreter's own prefix (its standard
library; site-packages are hidden), a private /proc that lists only its own processes, a minimal /dev,
and one writable directory, /work, a tmpfs capped at `disk_mb` and (as root) at `inodes` files. It runs as
the unprivileged uid 65534 without capabilities and with `no_new_privs`, under a seccomp filter that refuses
the kernel keyring calls (the grading user's session keyring, where Kerberos tickets live, stays out of
reach) and every way to a new user namespace (inside one a program could mount a tmpfs of its own and
escape the disk bound). Where this process may create cgroups (root on a v1 or v2 hierarchy), each program
gets its own memory cgroup (the whole program: every process, its files in /work and the kernel memory of
its inodes) and pids cgroup (its processes and threads only, so programs graded at once cannot starve each
other). Elsewhere the bounds that remain are the per-process rlimits: address space per process, and a
process limit that counts every process of uid 65534 on the host. rlimits also bound CPU time and file
size. When the program's first process ends, or the grader kills the jail at the timeout, the kernel kills
every process left in its PID namespace (a `setsid` child included), and the cgroups are emptied and removed.

As root (this repository's machines), bwrap creates the namespaces itself, mounts /work, and `setpriv` drops
to uid 65534 inside. As another user, bwrap needs unprivileged user namespaces and maps uid 65534 to the
caller; /work then has no inode bound and no cgroups are made (that path is not exercised here).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NOBODY = 65534
WORK = "/work"
SANDBOX = "/sandbox"
RUNNER_INSIDE = f"{SANDBOX}/runner.py"
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CLONE_NEWUSER = 0x10000000


@dataclass(frozen=True)
class JailLimits:
    """Per program: CPU seconds, address space, largest file written, /work size, processes and threads."""

    cpu_s: int
    memory_mb: int
    file_size_mb: int
    disk_mb: int
    processes: int
    inodes: int = 4096

    def apply(self, own_pids_cgroup: bool = False) -> None:
        """Set the rlimits; runs in the child between fork and exec (inherited by everything in the jail).
        With a pids cgroup of its own the program needs no RLIMIT_NPROC, which would count every process of
        uid 65534 on the host (another program being graded included)."""
        limits = [
            (resource.RLIMIT_CPU, self.cpu_s),
            (resource.RLIMIT_AS, self.memory_mb * 2**20),
            (resource.RLIMIT_FSIZE, self.file_size_mb * 2**20),
            (resource.RLIMIT_CORE, 0),
        ]
        if not own_pids_cgroup:
            limits.append((resource.RLIMIT_NPROC, self.processes + _own_processes()))
        for limit, value in limits:
            resource.setrlimit(limit, (value, value))


class JailCgroup:
    """A memory cgroup and a pids cgroup of one program (cgroup v1 controllers, or a v2 group with both), made
    before it starts and removed after it ends. `join()` runs in the child between fork and exec."""

    def __init__(self, limits: JailLimits) -> None:
        self.dirs: list[Path] = []
        name = f"tsq-jail-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        memory = (limits.memory_mb + limits.disk_mb) * 2**20  # /work's files are charged to it too
        try:
            for parent, settings in _cgroup_parents(memory, limits.processes):
                folder = parent / name
                folder.mkdir()
                self.dirs.append(folder)
                for file, value in settings.items():
                    if (folder / file).exists():
                        (folder / file).write_text(str(value))
        except OSError:
            self.close()
            raise

    def join(self) -> None:
        for folder in self.dirs:
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    def close(self) -> None:
        """Kill whatever is left in the groups and remove them."""
        for folder in reversed(self.dirs):
            for _ in range(100):
                pids = _read_pids(folder)
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    folder.rmdir()
                    break
                except OSError as err:
                    if err.errno == errno.ENOENT:
                        break
                    time.sleep(0.01)  # a killed process is still leaving the group
            else:
                log.warning("could not remove the jail's cgroup %s", folder)
        self.dirs = []


def _read_pids(folder: Path) -> list[int]:
    try:
        return [int(x) for x in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _own_cgroup(controller: str) -> str | None:
    """This process's cgroup path in the v1 hierarchy of `controller` ("" for v2)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return None


def _cgroup_parents(memory_bytes: int, processes: int) -> list[tuple[Path, dict[str, int]]]:
    """Where the program's cgroups go and what each limits: below this process's own groups, so every limit
    of the machine or container still holds. Raises OSError where no cgroup with both controllers can be made."""
    memory = {"memory.limit_in_bytes": memory_bytes, "memory.memsw.limit_in_bytes": memory_bytes}
    v1 = [(c, _own_cgroup(c)) for c in ("memory", "pids")]
    if all(path is not None and (CGROUP_ROOT / c).is_dir() for c, path in v1):
        mem_path, pids_path = (path for _, path in v1)
        return [
            (CGROUP_ROOT / "memory" / mem_path.lstrip("/"), memory),
            (CGROUP_ROOT / "pids" / pids_path.lstrip("/"), {"pids.max": processes}),
        ]
    unified = _own_cgroup("")
    for root in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        if unified is not None and (root / "cgroup.controllers").exists():
            parent = root / unified.lstrip("/")
            enabled = (parent / "cgroup.subtree_control").read_text().split()
            if not {"memory", "pids"} <= set(enabled):
                raise OSError(errno.EPERM, f"{parent} does not delegate the memory and pids controllers")
            return [(parent, {"memory.max": memory_bytes, "memory.swap.max": 0, "pids.max": processes})]
    raise OSError(errno.ENOENT, "no memory and pids cgroup hierarchy")


@functools.cache
def cgroup_problem() -> str | None:
    """Why programs cannot get cgroups of their own here (None when a trial group could be made and removed)."""
    try:
        JailCgroup(JailLimits(cpu_s=1, memory_mb=64, file_size_mb=1, disk_mb=1, processes=4)).close()
    except OSError as err:
        return f"{type(err).__name__}: {err}"
    return None


@functools.cache
def seccomp_filter() -> bytes:
    """The jail's seccomp program (BPF, built by libseccomp once per process, not once per program graded): the
    kernel keyring calls and every way to a new user namespace fail with EPERM; clone3 fails with ENOSYS (its
    flags sit in memory a filter cannot read), so the C library falls back to clone, whose flags it can."""
    import pyseccomp as seccomp

    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for call in ("keyctl", "add_key", "request_key", "unshare", "setns"):
        rules.add_rule(seccomp.ERRNO(errno.EPERM), call)
    rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as fh:
        rules.export_bpf(fh)
        fh.seek(0)
        return fh.read()


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
    bwrap: str,
    program: list[str],
    binds: dict[str, str],
    limits: JailLimits,
    env: dict[str, str],
    seccomp_fd: int | None = None,
) -> list[str]:
    """The bwrap command line that runs `program` (paths as seen inside) with `binds` (host file -> path in
    /sandbox, read-only) and only `env` as its environment; `seccomp_fd` is an open file of `seccomp_filter()`
    that the process starting bwrap passes on."""
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
    if root:  # mounted inside (below), where the tmpfs's inode count can be bounded too
        argv += ["--perms", "0777", "--dir", WORK]
    else:
        argv += ["--perms", "0777", "--size", str(limits.disk_mb * 2**20), "--tmpfs", WORK]
    for host, inside in binds.items():
        argv += ["--ro-bind", host, inside]
    argv += ["--chdir", "/" if root else WORK, "--clearenv"]  # as root, /work exists once mounted (below)
    for key, value in env.items():
        argv += ["--setenv", key, value]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    if root:
        size = f"size={limits.disk_mb * 2**20},nr_inodes={limits.inodes},mode=0777"
        mount = f'mount -t tmpfs -o {size} tsq-work {WORK} && cd {WORK} && exec "$@"'
        argv += ["/bin/sh", "-c", mount, "tsq-jail"]
        # then drop to an unprivileged uid with no capabilities inside the namespaces
        argv += ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        argv += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return argv + program


@contextlib.contextmanager
def jailed(
    bwrap: str,
    program: list[str],
    binds: dict[str, str],
    limits: JailLimits,
    env: dict[str, str],
    **popen,
):
    """Start `program` in the jail (its seccomp filter, and its own cgroups where they can be made); yield the
    bwrap process. On leaving, whatever is left of the program is killed and its cgroups removed."""
    cgroup = JailCgroup(limits) if cgroup_problem() is None else None
    with tempfile.TemporaryFile() as bpf:
        bpf.write(seccomp_filter())
        bpf.flush()
        bpf.seek(0)
        argv = jail_argv(bwrap, program, binds, limits, env, seccomp_fd=bpf.fileno())

        def prepare() -> None:  # in the child, before exec: every process of the program inherits these
            if cgroup is not None:
                cgroup.join()
            limits.apply(own_pids_cgroup=cgroup is not None)

        try:
            proc = subprocess.Popen(argv, pass_fds=(bpf.fileno(),), preexec_fn=prepare, start_new_session=True,
                                    **popen)  # fmt: skip
        except BaseException:
            if cgroup is not None:
                cgroup.close()
            raise
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):  # the jail's PID namespace dies with bwrap
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if cgroup is not None:
                cgroup.close()


@functools.cache
def jail_problem(bwrap: str = "bwrap") -> str | None:
    """Why the jail cannot run here (None when a trial program ran in it as uid 65534)."""
    path = shutil.which(bwrap)
    if path is None:
        return f"{bwrap!r} is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    try:
        seccomp_filter()
    except (ImportError, OSError, RuntimeError) as err:
        return f"the jail's seccomp filter cannot be built (pip install pyseccomp; apt-get install libseccomp2): {err}"
    binary, _ = interpreter()
    limits = JailLimits(cpu_s=10, memory_mb=1024, file_size_mb=1, disk_mb=1, processes=8)
    program = [binary, "-I", "-c", "import os; print(os.getuid())"]
    try:
        with jailed(path, program, {}, limits, {"PATH": "/usr/bin"}, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True) as proc:  # fmt: skip
            out, err = proc.communicate(timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        return f"bwrap could not start: {error}"
    if proc.returncode != 0 or out.strip() != str(NOBODY):
        return f"bwrap failed (exit {proc.returncode}): {err.strip()[-500:]}"
    return None


def runner_binds(runner: Path, files: dict[str, Path]) -> dict[str, str]:
    """Read-only binds: the runner at RUNNER_INSIDE and each of `files` (name -> host path) in /sandbox."""
    return {str(runner): RUNNER_INSIDE, **{str(host): f"{SANDBOX}/{name}" for name, host in files.items()}}
