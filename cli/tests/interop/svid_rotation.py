"""A long-lived connection keeps working across CA rotation and SVID re-issues.

Usage: python svid_rotation.py --socket PATH --fedhub PATH --admin-socket PATH

Everything happens on one HTTP/2 connection to alpha.test's Workload API socket, with one
FetchX509SVID stream open throughout:

1. A FetchJWTSVID call, then the stream's first message: SVID 1, signed by the current CA.
2. `fedhub bundle rotate --activate`: the hub publishes a new CA and signs with it from now on.
   The stream brings the bundle with the new CA. (The agent does not re-issue SVIDs because
   the CA rotated: an SVID is re-issued when its entry changes or at half its lifetime, and
   the old CA stays in the bundle while SVIDs it signed are valid.)
3. `fedhub entry update --x509-svid-ttl 10s` on the workload's entry: its revision changes, so
   the agent re-issues at once: SVID 2, signed by the new CA.
4. Nothing more is done: at half of SVID 2's lifetime the agent renews it on its own: SVID 3.
5. Another FetchJWTSVID call on the same connection, next to the still open stream.

Every wait is bounded. Prints what each phase saw (serials, authority key IDs, the subject key
IDs of the CAs in the bundle, when each message arrived); the Rust test asserts.
"""

import argparse
import json
import subprocess
import time

from cryptography import x509

from common import TIMEOUT, emit, fail, step
from workload_h2 import FETCH_X509_SVID, WorkloadConnection, split_der, x509_svids

WORKLOAD = "spiffe://alpha.test/web"
# The lifetime the entry gets in phase 3: short enough for phase 4 to see a renewal at half of
# it, long enough to survive a busy machine.
SHORT_TTL = "10s"


def describe(message):
    """The first SVID of an X509SVIDResponse, as the JSON the Rust test reads."""
    svids = x509_svids(message)
    if not svids:
        raise ValueError("an X509SVIDResponse without SVIDs")
    spiffe_id, chain, bundle = svids[0]
    leaf = x509.load_der_x509_certificate(split_der(chain)[0])
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    cas = []
    for der in split_der(bundle):
        ca = x509.load_der_x509_certificate(der)
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cas.append(ski.digest.hex())
    return {
        "spiffe_id": spiffe_id,
        "serial": format(leaf.serial_number, "x"),
        "issuer": leaf.issuer.rfc4514_string(),
        "authority_key_id": aki.key_identifier.hex(),
        "not_before": leaf.not_valid_before_utc.isoformat(),
        "not_after": leaf.not_valid_after_utc.isoformat(),
        "bundle_subject_key_ids": sorted(cas),
    }


def fedhub(binary, *args):
    """Runs the fedhub CLI; returns its stdout or stops the script with its stderr."""
    command = [binary, *args]
    completed = step(
        " ".join(command),
        lambda: subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT),
    )
    if completed.returncode != 0:
        fail(" ".join(command), f"exit {completed.returncode}: {completed.stderr.strip()}")
    return completed.stdout


class Watch:
    """Reads the open stream, recording every message with when it arrived."""

    def __init__(self, connection, stream):
        self.connection = connection
        self.stream = stream
        self.messages = []

    def until(self, phase, started, condition, timeout):
        """Reads messages until one satisfies `condition` (returns it) or `timeout` seconds
        after `started` pass (stops the script, naming `phase` and what arrived)."""
        deadline = started + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = self.connection.next_message(self.stream, max(remaining, 0.001))
            except (TimeoutError, ConnectionError) as error:
                fail(phase, f"{error}; messages so far: {json.dumps(self.messages)}")
            if message is None:
                fail(phase, f"the stream ended: {self.stream.result()}")
            seen = describe(message)
            seen["phase"] = phase
            seen["seconds_into_phase"] = round(time.monotonic() - started, 3)
            self.messages.append(seen)
            if condition(seen):
                return seen


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--fedhub", required=True)
    parser.add_argument("--admin-socket", required=True)
    args = parser.parse_args()
    admin = ["--admin-socket", args.admin_socket]

    connection = step("connecting", lambda: WorkloadConnection(args.socket))
    jwt_before = connection.fetch_jwt_svid()
    stream = step("opening FetchX509SVID", lambda: connection.start(FETCH_X509_SVID, b""))
    watch = Watch(connection, stream)
    first = watch.until("first message", time.monotonic(), lambda _: True, TIMEOUT)

    # 2. A new CA, active at once: the stream brings it in the bundle.
    started = time.monotonic()
    fedhub(args.fedhub, "bundle", "rotate", "--activate", *admin)
    old_cas = set(first["bundle_subject_key_ids"])
    with_new_ca = watch.until(
        "CA rotation",
        started,
        lambda seen: set(seen["bundle_subject_key_ids"]) - old_cas,
        TIMEOUT,
    )
    new_cas = sorted(set(with_new_ca["bundle_subject_key_ids"]) - old_cas)

    # 3. The entry changes: the agent re-issues at once, with the new CA.
    entries = json.loads(fedhub(args.fedhub, "entry", "list", "--output", "json", *admin))
    entry = next((e for e in entries if e["spiffe_id"] == WORKLOAD), None)
    if entry is None:
        fail("finding the workload's entry", f"no entry for {WORKLOAD}: {entries}")
    started = time.monotonic()
    fedhub(
        args.fedhub,
        "entry",
        "update",
        "--entry-id",
        entry["id"],
        "--x509-svid-ttl",
        SHORT_TTL,
        *admin,
    )
    reissued = watch.until(
        "entry update", started, lambda seen: seen["serial"] != with_new_ca["serial"], TIMEOUT
    )

    # 4. Nothing is done: the agent renews the short-lived SVID at half its lifetime.
    started = time.monotonic()
    renewed = watch.until(
        "renewal at half the lifetime",
        started,
        lambda seen: seen["serial"] != reissued["serial"],
        2 * TIMEOUT,
    )

    # 5. A unary call on the same connection, the stream still open.
    jwt_after = connection.fetch_jwt_svid()
    stream_after = {**stream.result(), "ended": stream.ended}
    connection.cancel(stream)
    connection.close()
    emit(
        {
            "jwt_before": jwt_before,
            "first": first,
            "with_new_ca": with_new_ca,
            "new_ca_subject_key_ids": new_cas,
            "reissued": reissued,
            "renewed": renewed,
            "messages": watch.messages,
            "jwt_after": jwt_after,
            "stream_after": stream_after,
            "connection_closed": connection.closed,
        }
    )


if __name__ == "__main__":
    main()
