"""A connection stops speaking for anyone once the process that opened it exits, even when
another process gets its pid.

Usage: python attest_exit.py --socket PATH

Three processes, sometimes four: this one (the coordinator), the connector it forks, the caller
the connector forks, and maybe an impostor.

1. The connector opens an HTTP/2 connection to the Workload API socket (preface and SETTINGS
   exchanged) and makes one FetchJWTSVID call on it.
2. The connector forks the caller, which inherits the socket and the initialised h2 state; the
   caller makes a call on the inherited connection while the connector lives (a control).
3. The connector exits; the coordinator reaps it, so /proc/<connector> is gone.
4. Where the host lets it, the coordinator makes the kernel hand the connector's pid to a new
   process, the impostor: a fork of the coordinator (so the same Python executable, uid and gid
   as the connector), which only sleeps. It writes pid - 1 to /proc/sys/kernel/ns_last_pid and
   forks (root with CAP_SYS_ADMIN over the pid namespace; retried while other processes race
   for the pid). An agent that looked the pid up again in /proc would now attest the impostor
   and find the same selectors; one bound to the /proc/<pid> it opened at accept sees that the
   process it recorded is gone. Where ns_last_pid is not writable, true pid reuse cannot be
   forced and the script reports why; the call then only shows that an exited peer fails.
5. The caller, re-parented to the coordinator (a subreaper) and told to go on, calls again on
   the inherited connection: the agent must refuse it.
6. The caller opens a new connection and calls: it is attested itself and gets its identity.

The coordinator kills the impostor and reaps everything. Prints one JSON object; the Rust test
asserts.
"""

import argparse
import os
import time

from common import TIMEOUT, emit, step
from processes import Pipe, alive, become_subreaper, exe, fork, kill_and_reap, reap
from workload_h2 import WorkloadConnection

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"
# How often to try handing the pid out again when another process took it first.
REUSE_ATTEMPTS = 100


def impostor_with_pid(target):
    """Forks a sleeping child that gets pid `target`, through ns_last_pid. Returns (its pid or
    None, what happened)."""
    if not os.access(NS_LAST_PID, os.W_OK):
        return None, {"forced": False, "reason": f"{NS_LAST_PID} is not writable here"}
    for attempt in range(1, REUSE_ATTEMPTS + 1):
        try:
            with open(NS_LAST_PID, "w") as last_pid:
                last_pid.write(str(target - 1))
        except OSError as error:
            return None, {"forced": False, "reason": f"writing {NS_LAST_PID}: {error}"}
        pid = fork(lambda: time.sleep(6 * TIMEOUT))
        if pid == target:
            return pid, {"forced": True, "attempts": attempt, "pid": pid, "exe": exe(pid)}
        kill_and_reap(pid)
    return None, {"forced": False, "reason": f"pid {target} went elsewhere {REUSE_ATTEMPTS} times"}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", required=True)
    args = parser.parse_args()

    step("becoming the subreaper", become_subreaper)
    reports = Pipe()  # connector and caller -> coordinator
    exit_now = Pipe()  # caller -> connector
    go_on = Pipe()  # coordinator -> caller

    def connector():
        connection = WorkloadConnection(args.socket)
        first = connection.fetch_jwt_svid()
        connector_pid = os.getpid()

        def caller():
            report = {"connector_pid": connector_pid, "caller_pid": os.getpid(), "first": first}
            report["inherited_before_exit"] = connection.fetch_jwt_svid()
            exit_now.send("exit")
            go_on.receive("the coordinator's go-ahead", timeout=3 * TIMEOUT)
            report["caller_parent_at_call"] = os.getppid()
            report["inherited_after_exit"] = connection.fetch_jwt_svid()
            report["inherited_after_exit_again"] = connection.fetch_jwt_svid()
            connection.close()
            fresh = WorkloadConnection(args.socket)
            report["new_connection"] = fresh.fetch_jwt_svid()
            fresh.close()
            reports.send(report)

        reports.send({"caller_pid": fork(caller)})
        # From here on the connection belongs to the caller; the connector only waits, then
        # exits (fork's wrapper calls os._exit).
        exit_now.receive("the caller's go-ahead to exit")

    connector_pid = fork(connector)
    reports.close_write()
    caller_pid = None
    impostor_pid = None
    report = None
    try:
        caller_pid = step("waiting for the caller's pid", lambda: reports.receive("its pid"))
        caller_pid = caller_pid["caller_pid"]
        status = step("reaping the connector", lambda: reap(connector_pid))
        connector = {
            "exit_code": os.waitstatus_to_exitcode(status),
            "alive_after_reaping": alive(connector_pid),
        }
        impostor_pid, reuse = impostor_with_pid(connector_pid)
        go_on.send("call")
        report = step(
            "waiting for the caller's report (its traceback, if any, is above)",
            lambda: reports.receive("the caller's report", timeout=3 * TIMEOUT),
        )
        report["coordinator_pid"] = os.getpid()
        report["python_exe"] = exe(os.getpid())
        report["connector"] = connector
        report["pid_reuse"] = reuse
        if impostor_pid is not None:
            # Still there when the caller called, with the connector's pid.
            reuse["alive_after_the_calls"] = alive(impostor_pid)
    finally:
        if impostor_pid is not None:
            kill_and_reap(impostor_pid)
        if caller_pid is not None and report is None:
            kill_and_reap(caller_pid)
    status = step("reaping the caller", lambda: reap(caller_pid))
    report["caller_exit_code"] = os.waitstatus_to_exitcode(status)
    emit(report)


if __name__ == "__main__":
    main()
