"""Process plumbing for the attestation scripts: forked children that never return into the
caller's code, pipes with bounded waits, and reaping with bounded waits.

Every pipe here is created non-inheritable (Python's default), so a program a child executes
holds none of them.
"""

import ctypes
import json
import os
import select
import signal
import sys
import time
import traceback

from common import TIMEOUT

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """Makes this process the subreaper of its descendants: a grandchild whose parent exits is
    re-parented here (not to init), so that this process can reap it and no zombie is left."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def fork(body):
    """Forks a child that runs `body()` and exits with os._exit: 0 when it returned, 1 after
    printing the exception it raised. Returns the child's pid to the parent only."""
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:
        body()
        code = 0
    except BaseException:  # a child must never return into its parent's code
        traceback.print_exc(file=sys.stderr)
    finally:
        sys.stderr.flush()
        os._exit(code)


class Pipe:
    """A one-way pipe carrying JSON values, one per line."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        self.buffer = b""

    def send(self, value):
        os.write(self.write_fd, (json.dumps(value) + "\n").encode())

    def close_write(self):
        if self.write_fd is not None:
            os.close(self.write_fd)
            self.write_fd = None

    def receive(self, what, timeout=TIMEOUT):
        """The next value, waiting at most `timeout` seconds. Raises TimeoutError, or EOFError
        when every writer closed the pipe first; `what` names the value in both messages."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within {timeout} s")
            ready, _, _ = select.select([self.read_fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                raise EOFError(f"the pipe closed before {what} arrived")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def wait_until(condition, what, timeout=TIMEOUT, interval=0.01):
    """Polls `condition()` until it is true; raises TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


def reap(pid, timeout=TIMEOUT):
    """Waits (at most `timeout` seconds) for the child `pid` to exit and reaps it; returns its
    wait status. Raises TimeoutError when it is still running."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        if time.monotonic() >= deadline:
            raise TimeoutError(f"process {pid} did not exit within {timeout} s")
        time.sleep(0.01)


def kill_and_reap(pid):
    """SIGKILLs this process's child `pid` (unless it is gone) and reaps it."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        reap(pid)
    except ChildProcessError:
        pass


def alive(pid):
    """Whether a process `pid` exists (a zombie counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def exe(pid):
    """The target of /proc/<pid>/exe, or None when it cannot be read (gone, a zombie)."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
