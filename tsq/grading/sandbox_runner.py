"""Runs one untrusted program inside the code grader's child process (stdlib only; started with `python -I`).

    python -I sandbox_runner.py stdin SOLUTION
    python -I sandbox_runner.py functional SOLUTION FUNC_NAME   (arguments as JSON lines on stdin)

Before the program runs, an audit hook (PEP 578) refuses sockets, new processes, signals to other
processes, ctypes, and any file write, rename or delete outside the working directory. A program can
defeat it (through `_posixsubprocess`, or by editing the hook's module state), so it is defence in depth
only: the boundary is the namespace jail the grader starts this runner in (`tsq/grading/jail.py`).
"""

import io
import json
import os
import sys

ROOT = os.path.realpath(os.getcwd())
RESULT_MARKER = "__TSQ_RESULT__"
DENIED = {
    "socket.__new__",
    "socket.connect",
    "socket.bind",
    "socket.getaddrinfo",
    "socket.sendto",
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "pty.spawn",
    "ctypes.dlopen",
    "ctypes.dlsym",
    "ctypes.call_function",
}
PATH_EVENTS = {
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.symlink",
    "os.link",
    "os.truncate",
    "os.utime",
    "shutil.rmtree",
    "shutil.copyfile",
    "shutil.move",
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _inside(path) -> bool:
    if isinstance(path, int):  # an already-open descriptor
        return True
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    full = os.path.realpath(os.path.join(ROOT, os.fspath(path)))
    return full == ROOT or full.startswith(ROOT + os.sep)


def _audit(event, args):
    if event in DENIED:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & WRITE_FLAGS
        )
        if writing and not _inside(path):
            raise PermissionError(f"sandbox: writing {path!r} outside the working directory is not allowed")
    elif event in PATH_EVENTS:
        for arg in args[:2]:
            if isinstance(arg, (str, bytes, os.PathLike)) and not _inside(arg):
                raise PermissionError(f"sandbox: {event} on {arg!r} outside the working directory is not allowed")


PRELUDE = (
    "from typing import *\nfrom collections import *\nimport math, heapq, bisect, itertools, functools, string, re\n"
)


def main() -> None:
    mode, solution = sys.argv[1], sys.argv[2]
    with open(solution, encoding="utf-8") as f:
        code = f.read()
    if mode == "functional":
        args = [json.loads(line) for line in sys.stdin.read().splitlines() if line.strip()]
        compiled = compile(PRELUDE + code, "solution.py", "exec")
        namespace = {"__name__": "solution"}
        sys.addaudithook(_audit)
        captured = io.StringIO()
        real_stdout, sys.stdout = sys.stdout, captured
        exec(compiled, namespace)
        if "Solution" in namespace:
            result = getattr(namespace["Solution"](), sys.argv[3])(*args)
        else:
            result = namespace[sys.argv[3]](*args)
        sys.stdout = real_stdout
        print(RESULT_MARKER + json.dumps(result))
    else:
        compiled = compile(code, "solution.py", "exec")
        sys.addaudithook(_audit)
        exec(compiled, {"__name__": "__main__"})


if __name__ == "__main__":
    main()
