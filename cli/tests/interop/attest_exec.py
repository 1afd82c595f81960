"""A connection stops speaking for its process once that process executes another program.

Usage: python attest_exec.py --socket PATH

Three processes: this one (the coordinator), the connector it forks, and the caller the
connector forks.

1. The connector opens an HTTP/2 connection to the Workload API socket (preface and SETTINGS
   exchanged) and makes one FetchJWTSVID call on it: the agent recorded the connector as the
   peer of this connection when it accepted it.
2. The connector forks the caller, which inherits the socket and the initialised h2 state; the
   connector does not touch the connection again. The caller makes a call on the inherited
   connection while the connector still runs Python (a control: the peer is unchanged).
3. The connector executes `sleep 30` (its copy of the socket is close-on-exec), the caller
   waits until /proc/<connector>/exe shows sleep, and calls again on the inherited connection:
   the agent must refuse it, since the peer now runs another program.
4. The caller opens a new connection and calls: it is attested itself and gets its identity.

The coordinator is the subreaper of both, kills the sleeping connector and reaps both, so
nothing is left behind. Prints one JSON object with each call's result; the Rust test asserts.
"""

import argparse
import os
import shutil

from common import TIMEOUT, emit, fail, step
from processes import Pipe, become_subreaper, exe, fork, kill_and_reap, reap, wait_until
from workload_h2 import WorkloadConnection


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", required=True)
    args = parser.parse_args()

    python_exe = exe(os.getpid())
    sleep = shutil.which("sleep")
    if sleep is None:
        fail("finding sleep", "no `sleep` on PATH")
    sleep_exe = os.path.realpath(sleep)
    if sleep_exe == python_exe:
        fail("finding sleep", f"{sleep_exe} is the Python executable itself (a multi-call binary?)")

    step("becoming the subreaper", become_subreaper)
    reports = Pipe()  # connector and caller -> coordinator
    exec_now = Pipe()  # caller -> connector

    def connector():
        connection = WorkloadConnection(args.socket)
        first = connection.fetch_jwt_svid()
        connector_pid = os.getpid()

        def caller():
            report = {"connector_pid": connector_pid, "caller_pid": os.getpid(), "first": first}
            report["inherited_before_exec"] = connection.fetch_jwt_svid()
            exec_now.send("exec")
            wait_until(
                lambda: exe(connector_pid) == sleep_exe,
                f"the connector (pid {connector_pid}) executing {sleep_exe}",
            )
            report["connector_exe_at_call"] = exe(connector_pid)
            report["inherited_after_exec"] = connection.fetch_jwt_svid()
            # Still refused: a failed attestation leaves nothing behind that a retry could use.
            report["inherited_after_exec_again"] = connection.fetch_jwt_svid()
            connection.close()
            fresh = WorkloadConnection(args.socket)
            report["new_connection"] = fresh.fetch_jwt_svid()
            fresh.close()
            reports.send(report)

        reports.send({"caller_pid": fork(caller)})
        # From here on the connection belongs to the caller.
        exec_now.receive("the caller's go-ahead to exec")
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.execv(sleep_exe, ["sleep", "30"])

    connector_pid = fork(connector)
    reports.close_write()
    caller_pid = None
    report = None
    try:
        caller_pid = step("waiting for the caller's pid", lambda: reports.receive("its pid"))
        caller_pid = caller_pid["caller_pid"]
        report = step(
            "waiting for the caller's report (its traceback, if any, is above)",
            lambda: reports.receive("the caller's report", timeout=3 * TIMEOUT),
        )
        report["sleep_exe"] = sleep_exe
        report["python_exe"] = python_exe
        report["connector_exe_at_end"] = exe(connector_pid)
    finally:
        # The connector sleeps (or hangs after a failure): kill it. Then the caller is
        # re-parented to this subreaper; it exits by itself after its report, else it is killed.
        kill_and_reap(connector_pid)
        if caller_pid is not None and report is None:
            kill_and_reap(caller_pid)
    status = step("reaping the caller", lambda: reap(caller_pid))
    report["caller_exit_code"] = os.waitstatus_to_exitcode(status)
    emit(report)


if __name__ == "__main__":
    main()
