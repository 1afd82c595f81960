"""What `:authority` py-spiffe (gRPC C-core) and grpcurl (grpc-go) send over a Unix socket.

Usage: python sniff_authority.py --grpcurl PATH

Listens on a Unix socket of its own with a minimal HTTP/2 server (the `h2` library), lets each
client make one call, records the request headers of the first stream, and answers it with
grpc-status 12 (UNIMPLEMENTED). Prints, per client, the socket path and the headers seen; the
Rust test checks that the raw HTTP/2 test covers the `:authority` each client really sends.
"""

import argparse
import os
import socket
import subprocess
import tempfile
import threading

import h2.config
import h2.connection
import h2.events

from common import TIMEOUT, emit, fail, step
from spiffe import WorkloadApiClient


def serve_one_connection(listener, seen):
    """Accepts one connection, records the headers of its first request in `seen` and answers
    every request with UNIMPLEMENTED."""
    connection, _ = listener.accept()
    connection.settimeout(TIMEOUT)
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=False,
            header_encoding="utf-8",
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
    )
    server.initiate_connection()
    connection.sendall(server.data_to_send())
    try:
        # Until the client hangs up: closing first could cut the answer off and make the
        # client retry.
        while True:
            data = connection.recv(65536)
            if not data:
                break
            for event in server.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    seen.setdefault("headers", [[name, value] for name, value in event.headers])
                    # Trailers-only: grpc-status 12 is UNIMPLEMENTED.
                    answer = [
                        (":status", "200"),
                        ("content-type", "application/grpc"),
                        ("grpc-status", "12"),
                    ]
                    server.send_headers(event.stream_id, answer, end_stream=True)
            connection.sendall(server.data_to_send())
    except OSError:
        pass  # the client reset the connection, or went quiet for TIMEOUT
    finally:
        connection.close()


def sniff(name, client):
    """Runs `client(socket_path)` against a fresh listener; returns what the server saw."""
    directory = tempfile.mkdtemp(prefix="fedhub-sniff-")
    path = os.path.join(directory, "agent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(TIMEOUT)
    seen = {}
    server = threading.Thread(target=serve_one_connection, args=(listener, seen), daemon=True)
    server.start()
    client(path)  # answered with UNIMPLEMENTED: the client's error is expected and ignored
    server.join(TIMEOUT)
    listener.close()
    os.unlink(path)
    os.rmdir(directory)
    if "headers" not in seen:
        fail(f"sniffing {name}", "no request arrived at the listener")
    authority = [value for header, value in seen["headers"] if header == ":authority"]
    return {
        "socket": path,
        "authority": authority[0] if authority else None,
        "headers": seen["headers"],
    }


def py_spiffe(path):
    client = WorkloadApiClient(f"unix://{path}", default_timeout=TIMEOUT)
    try:
        client.fetch_jwt_svid({"spiffe://beta.test/echo"})
    except Exception:
        pass
    client.close()


def grpcurl(binary):
    def run(path):
        step(
            "running grpcurl",
            lambda: subprocess.run(
                [binary, "-plaintext", "-unix", "-max-time", "5", path, "list"],
                capture_output=True,
                timeout=TIMEOUT,
            ),
        )

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grpcurl", required=True)
    args = parser.parse_args()
    emit(
        {
            "py-spiffe": sniff("py-spiffe", py_spiffe),
            "grpcurl": sniff("grpcurl", grpcurl(args.grpcurl)),
        }
    )


if __name__ == "__main__":
    main()
