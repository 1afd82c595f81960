"""A small blocking gRPC client for the Workload API over one HTTP/2 connection (the `h2`
library) on a Unix socket, for the attestation scripts.

Unlike `h2_raw.py`, which opens a connection per call, a `WorkloadConnection` keeps its
connection and can carry several calls, one after the other or side by side (an open
`FetchX509SVID` stream next to unary calls). The whole client state (socket and h2 state
machine) lives in the object, so a forked child can go on using a connection its parent set
up, as long as the parent no longer touches it.

Results are plain dicts, ready for JSON: `status` (`:status`), `grpc_status`, `grpc_message`
(percent-decoded, as the gRPC spec asks), `svid_id` (the SPIFFE ID in the first response
message), `messages` (how many arrived), `stream_reset`, `connection_closed` and `error` (an
exception that ended the call early, e.g. a timeout).
"""

import socket
import time
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from common import TIMEOUT
from h2_raw import first_svid_id, grpc_frame, jwt_svid_request, length_delimited_fields

FETCH_JWT_SVID = "/SpiffeWorkloadAPI/FetchJWTSVID"
FETCH_X509_SVID = "/SpiffeWorkloadAPI/FetchX509SVID"

# The audience the scripts ask JWT-SVIDs for.
AUDIENCE = "spiffe://beta.test/echo"


class Stream:
    """What arrived on one HTTP/2 stream."""

    def __init__(self, stream_id):
        self.id = stream_id
        self.status = None
        self.grpc_status = None
        self.grpc_message = None
        self.body = b""
        self.messages = []
        self.read = 0
        self.ended = False
        self.reset = None

    def result(self):
        return {
            "stream_id": self.id,
            "status": self.status,
            "grpc_status": self.grpc_status,
            "grpc_message": self.grpc_message,
            "svid_id": first_svid_id(self.messages[0]) if self.messages else None,
            "messages": len(self.messages),
            "stream_reset": self.reset,
        }


class WorkloadConnection:
    """One HTTP/2 connection to a Workload API socket, with the preface and both SETTINGS
    exchanged when the constructor returns."""

    def __init__(self, socket_path, timeout=TIMEOUT):
        self.timeout = timeout
        self.streams = {}
        self.closed = None
        self.settings_received = False
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(socket_path)
            self.h2.initiate_connection()
            self._flush()
            deadline = time.monotonic() + timeout
            while not self.settings_received:
                self._pump(deadline, "the agent's SETTINGS frame")
        except BaseException:
            self.sock.close()
            raise

    def start(self, path, request):
        """Starts a call of `path` with one request message (half-closing the stream)."""
        stream = Stream(self.h2.get_next_available_stream_id())
        self.streams[stream.id] = stream
        self.h2.send_headers(
            stream.id,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("workload.spiffe.io", "true"),
            ],
        )
        self.h2.send_data(stream.id, grpc_frame(request), end_stream=True)
        self._flush()
        return stream

    def unary(self, path, request, timeout=None):
        """A unary call; returns its result (see the module docs). Never raises: an exception
        (timeout, closed connection) ends up in `error`."""
        stream = None
        try:
            stream = self.start(path, request)
            deadline = time.monotonic() + (timeout or self.timeout)
            while not stream.ended:
                self._pump(deadline, f"the end of {path} (stream {stream.id})")
            return {**stream.result(), "connection_closed": self.closed, "error": None}
        except (OSError, h2.exceptions.ProtocolError, ConnectionError) as error:
            outcome = stream.result() if stream else {}
            return {
                **outcome,
                "connection_closed": self.closed,
                "error": f"{type(error).__name__}: {error}",
            }

    def fetch_jwt_svid(self, audience=AUDIENCE):
        """FetchJWTSVID for `audience`: the usual probe of whether this connection's caller
        is attested."""
        return self.unary(FETCH_JWT_SVID, jwt_svid_request(audience))

    def next_message(self, stream, timeout):
        """The next response message of `stream` (bytes), waiting at most `timeout` seconds;
        None when the stream ended first. Raises TimeoutError when nothing arrived in time."""
        deadline = time.monotonic() + timeout
        while stream.read >= len(stream.messages):
            if stream.ended:
                return None
            self._pump(deadline, f"a message on stream {stream.id}")
        stream.read += 1
        return stream.messages[stream.read - 1]

    def cancel(self, stream):
        """Resets `stream` with CANCEL, the way a gRPC client cancels a call."""
        if not stream.ended:
            self.h2.reset_stream(stream.id, h2.errors.ErrorCodes.CANCEL)
            stream.ended = True
            self._flush()

    def close(self):
        """Says goodbye (GOAWAY) and closes the socket."""
        try:
            if self.closed is None:
                self.h2.close_connection()
                self._flush()
        except OSError:
            pass
        finally:
            self.sock.close()

    def _flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def _pump(self, deadline, waiting_for):
        """Reads once from the socket (until `deadline`) and applies what arrived."""
        if self.closed is not None:
            raise ConnectionError(
                f"the connection is closed ({self.closed}) while waiting for {waiting_for}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out waiting for {waiting_for}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError(f"timed out waiting for {waiting_for}") from None
        if not data:
            self.closed = "EOF"
            raise ConnectionError(
                f"the agent closed the connection while waiting for {waiting_for}"
            )
        for event in self.h2.receive_data(data):
            self._apply(event)
        self._flush()

    def _apply(self, event):
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_received = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed = h2.errors.ErrorCodes(event.error_code).name
        stream = self.streams.get(getattr(event, "stream_id", None))
        if stream is None:
            return
        if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            fields = dict(event.headers)
            if ":status" in fields:
                stream.status = int(fields[":status"])
            # A trailers-only response carries grpc-status in its only HEADERS frame.
            if "grpc-status" in fields:
                stream.grpc_status = int(fields["grpc-status"])
                message = fields.get("grpc-message")
                stream.grpc_message = None if message is None else unquote(message)
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream.body += event.data
            while len(stream.body) >= 5:
                length = int.from_bytes(stream.body[1:5], "big")
                if len(stream.body) < 5 + length:
                    break
                stream.messages.append(stream.body[5 : 5 + length])
                stream.body = stream.body[5 + length :]
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset):
            stream.reset = h2.errors.ErrorCodes(event.error_code).name
            stream.ended = True


def x509_svids(message):
    """The SVIDs of an X509SVIDResponse: for each, (spiffe_id, DER chain, DER bundle)."""
    svids = []
    for number, svid in length_delimited_fields(message):
        if number != 1:
            continue
        fields = {}
        for inner_number, value in length_delimited_fields(svid):
            fields.setdefault(inner_number, value)
        svids.append((fields.get(1, b"").decode(), fields.get(2, b""), fields.get(4, b"")))
    return svids


def split_der(data):
    """Splits concatenated DER structures (certificates) into a list."""
    parts = []
    at = 0
    while at < len(data):
        if data[at] != 0x30:
            raise ValueError(f"not a DER SEQUENCE at byte {at}")
        first = data[at + 1]
        if first < 0x80:
            header, length = 2, first
        else:
            count = first & 0x7F
            header = 2 + count
            length = int.from_bytes(data[at + 2 : at + 2 + count], "big")
        parts.append(data[at : at + header + length])
        at += header + length
    return parts
