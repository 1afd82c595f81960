"""py-spiffe's X509Source on alpha.test's socket sees beta.test's CA rotation arrive.

Usage: python py_spiffe_x509_source.py --alpha-socket PATH --fedhub PATH
           --alpha-admin-socket PATH --beta-admin-socket PATH

Opens an X509Source (which keeps a FetchX509SVID stream open), records the X.509 authorities it
holds for beta.test, then has beta.test publish new CA keys (`fedhub bundle rotate`) and
alpha.test fetch beta.test's bundle at once (`fedhub federation refresh`), and polls the source
until beta.test's authorities change or TIMEOUT passes. Prints both sets of authorities (as
SHA-256 fingerprints) and how long the change took; the Rust test asserts.
"""

import argparse
import hashlib
import subprocess
import threading
import time

from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import TrustDomain, WorkloadApiClient, X509Source

from common import TIMEOUT, emit, fail, step

BETA = TrustDomain("beta.test")


def authorities(source, trust_domain):
    """SHA-256 fingerprints of the source's X.509 authorities for `trust_domain`, sorted."""
    bundle = source.get_bundle_for_trust_domain(trust_domain)
    if bundle is None:
        return []
    return sorted(
        hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
        for cert in bundle.x509_authorities
    )


def fedhub(binary, *args):
    """Runs the fedhub CLI, failing the script with its output if it does not succeed."""
    command = [binary, *args]
    completed = step(
        " ".join(command),
        lambda: subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT),
    )
    if completed.returncode != 0:
        fail(" ".join(command), f"exit {completed.returncode}: {completed.stderr.strip()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alpha-socket", required=True)
    parser.add_argument("--fedhub", required=True)
    parser.add_argument("--alpha-admin-socket", required=True)
    parser.add_argument("--beta-admin-socket", required=True)
    args = parser.parse_args()

    client = step(
        "connecting to alpha.test's socket",
        lambda: WorkloadApiClient(f"unix://{args.alpha_socket}", default_timeout=TIMEOUT),
    )
    # One plain call first: when the agent refuses the connection, this says why, where the
    # X509Source would only retry until its timeout.
    step("FetchX509SVID (fetch_x509_context) on alpha.test", client.fetch_x509_context)
    source = step(
        "opening an X509Source on alpha.test's socket",
        lambda: X509Source(workload_api_client=client, timeout_in_seconds=TIMEOUT),
    )
    updates = []
    updated = threading.Event()

    def on_update():
        updates.append(time.monotonic())
        updated.set()

    source.subscribe_for_updates(on_update)
    svid_id = str(source.get_x509_context().default_svid.spiffe_id)
    before = authorities(source, BETA)
    if not before:
        fail("reading the X509Source", "it holds no X.509 authorities for beta.test")

    started = time.monotonic()
    fedhub(args.fedhub, "bundle", "rotate", "--admin-socket", args.beta_admin_socket)
    fedhub(
        args.fedhub,
        "federation",
        "refresh",
        "--trust-domain",
        "beta.test",
        "--admin-socket",
        args.alpha_admin_socket,
    )
    after = before
    while time.monotonic() - started < TIMEOUT:
        updated.wait(0.1)
        updated.clear()
        after = step("reading the X509Source", lambda: authorities(source, BETA))
        if after != before:
            break
    elapsed = time.monotonic() - started
    source.close()
    client.close()
    emit(
        {
            "svid_id": svid_id,
            "beta_authorities_before": before,
            "beta_authorities_after": after,
            "seconds_until_change": round(elapsed, 3),
            "stream_updates_after_rotation": sum(1 for at in updates if at >= started),
        }
    )


if __name__ == "__main__":
    main()
