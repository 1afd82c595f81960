"""Raw HTTP/2 (the Python `h2` library) against a fedhub agent's Workload API socket.

Usage: python h2_raw.py --socket PATH

Sends gRPC calls over plain HTTP/2 with prior knowledge, exactly as written here: no header is
validated, normalized or added by the library. Each case uses its own connection and differs
only in its `:authority` pseudo-header, which gRPC clients fill in differently over a Unix
socket. Prints one JSON object per case (status, grpc-status, the SPIFFE ID in the first
response message, or how the stream or connection was refused); the Rust test asserts.
"""

import argparse
import socket
import struct
from urllib.parse import quote

import h2.config
import h2.connection
import h2.errors
import h2.events

from common import TIMEOUT, emit

FETCH_JWT_SVID = "/SpiffeWorkloadAPI/FetchJWTSVID"
FETCH_X509_SVID = "/SpiffeWorkloadAPI/FetchX509SVID"


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def length_delimited_fields(message):
    """Yields (field number, bytes) for the length-delimited fields of a protobuf message."""
    at = 0
    while at < len(message):
        key, at = read_varint(message, at)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, at = read_varint(message, at)
        elif wire_type == 2:
            length, at = read_varint(message, at)
            yield number, message[at : at + length]
            at += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire_type}")


def first_svid_id(message):
    """The `spiffe_id` (field 1) of the first element of `svids` (field 1): the same shape in
    JWTSVIDResponse and X509SVIDResponse."""
    for number, svid in length_delimited_fields(message):
        if number == 1:
            for inner_number, value in length_delimited_fields(svid):
                if inner_number == 1:
                    return value.decode()
    return None


def jwt_svid_request(audience):
    """JWTSVIDRequest { repeated string audience = 1; }"""
    encoded = audience.encode()
    return b"\x0a" + varint(len(encoded)) + encoded


def grpc_frame(message):
    """The gRPC length prefix: uncompressed flag, then the big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


def call(socket_path, path, authority, request, streaming):
    """One call on a fresh connection. `authority` None leaves the header out."""
    result = {
        "status": None,
        "grpc_status": None,
        "grpc_message": None,
        "first_message_svid_id": None,
        "message_bytes": [],
        "stream_reset": None,
        "connection_closed": None,
        "error": None,
    }
    connection = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
    )
    headers = [(":method", "POST"), (":scheme", "http"), (":path", path)]
    if authority is not None:
        headers.append((":authority", authority))
    headers += [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("workload.spiffe.io", "true"),
    ]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(socket_path)
        connection.initiate_connection()
        stream_id = connection.get_next_available_stream_id()
        connection.send_headers(stream_id, headers)
        connection.send_data(stream_id, grpc_frame(request), end_stream=True)
        sock.sendall(connection.data_to_send())
        body = b""
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                result["error"] = "the agent closed the connection"
                break
            for event in connection.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    fields = dict(event.headers)
                    if ":status" in fields:
                        result["status"] = int(fields[":status"])
                    # A trailers-only response carries grpc-status in its only HEADERS frame.
                    if "grpc-status" in fields:
                        result["grpc_status"] = int(fields["grpc-status"])
                        result["grpc_message"] = fields.get("grpc-message")
                elif isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                    body += event.data
                    while len(body) >= 5:
                        _, length = struct.unpack(">BI", body[:5])
                        if len(body) < 5 + length:
                            break
                        message, body = body[5 : 5 + length], body[5 + length :]
                        if not result["message_bytes"]:
                            result["first_message_svid_id"] = first_svid_id(message)
                        result["message_bytes"].append(len(message))
                    if streaming and result["message_bytes"]:
                        # One message is all we want from the stream: cancel it.
                        connection.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                        done = True
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
                elif isinstance(event, h2.events.StreamReset):
                    result["stream_reset"] = h2.errors.ErrorCodes(event.error_code).name
                    done = True
                elif isinstance(event, h2.events.ConnectionTerminated):
                    result["connection_closed"] = h2.errors.ErrorCodes(event.error_code).name
                    done = True
            sock.sendall(connection.data_to_send())
        if not result["connection_closed"]:
            connection.close_connection()
            sock.sendall(connection.data_to_send())
    except (OSError, h2.exceptions.ProtocolError) as error:
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        sock.close()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket", required=True)
    args = parser.parse_args()
    path = args.socket

    # name -> the `:authority` sent (None: the header is left out).
    authorities = {
        "raw socket path (grpc-go, grpcurl)": path,
        "percent-encoded path with its leading slash (gRPC C-core)": quote(path, safe=""),
        "percent-encoded path without its leading slash (grpcio 1.85, py-spiffe)": quote(
            path.lstrip("/"), safe=""
        ),
        "empty": "",
        "localhost (tonic, the Rust spiffe crate)": "localhost",
        "absent": None,
    }
    request = jwt_svid_request("spiffe://beta.test/echo")
    cases = []
    for name, authority in authorities.items():
        outcome = call(path, FETCH_JWT_SVID, authority, request, streaming=False)
        cases.append(
            {
                "name": f"FetchJWTSVID, :authority {name}",
                "authority": authority,
                "streaming": False,
                **outcome,
            }
        )
    for name in [
        "percent-encoded path with its leading slash (gRPC C-core)",
        "percent-encoded path without its leading slash (grpcio 1.85, py-spiffe)",
    ]:
        authority = authorities[name]
        outcome = call(path, FETCH_X509_SVID, authority, b"", streaming=True)
        cases.append(
            {
                "name": f"FetchX509SVID stream, :authority {name}",
                "authority": authority,
                "streaming": True,
                **outcome,
            }
        )
    emit({"cases": cases})


if __name__ == "__main__":
    main()
