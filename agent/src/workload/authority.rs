//! HTTP/2 `:authority` as gRPC clients send it over a Unix socket.
//!
//! A URI authority has no form for a Unix socket, so gRPC stacks improvise: gRPC C-core (and
//! with it grpcio, py-spiffe, the C++, Ruby and PHP stacks) sends the %-encoded socket path,
//! grpc-java and older grpc-go the raw path, some send it empty, others `localhost` or nothing.
//! The `h2` crate under tonic parses `:authority` as a URI authority and resets the stream with
//! `PROTOCOL_ERROR` for the first three, before any service sees the request. Its maintainers
//! keep that strict, and rightly so for TCP; over the agent's Unix socket the authority means
//! nothing (the caller is identified by attestation, never by what it sends), and SPIRE's agent
//! serves these clients, so fedhub must too.
//!
//! [`AuthorityRewrite`] sits between the Unix socket and the HTTP/2 server, on the client's
//! side of the connection only. It forwards the connection preface and every frame unchanged,
//! and reads the first header block (a `HEADERS` frame and its `CONTINUATION`s). When h2 would
//! accept that block's `:authority` (or it has none), the connection passes unchanged from
//! then on: clients keep one authority per connection, and such clients pay nothing. Otherwise
//! every header block of the connection is decoded (HPACK) and encoded again, replacing an
//! `:authority` value that is not a valid URI authority by `localhost`. Everything else h2 checks stays checked by h2: the rewritten block carries the
//! same fields in the same order (pseudo-header rules, names, sizes, `te`, the security header),
//! and frames are still parsed and limited by h2. Re-encoded blocks use only literal fields
//! without indexing, so the server's HPACK table stays empty and needs no mirroring.
//!
//! Anything the rewriter does not understand as a well-formed header block (bad padding, a
//! frame between a block's frames, an HPACK error, an oversized block) is passed on as it came,
//! and so is everything after it: h2 then reports the error as it would have without the
//! rewriter (a connection error, since its HPACK table no longer matches the client's).
//! The write half (server to client) is not touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, BufMut as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;
/// The frame header: length (24 bits), type, flags, stream id (RFC 9113 §4.1).
const FRAME_HEADER_LEN: usize = 9;
/// Frame types that carry header block fragments.
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
/// `HEADERS` flags.
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest header block (all fragments) the rewriter decodes; larger ones are passed on
/// unchanged, for h2 to refuse. Well above the server's header list limit.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The HTTP/2 settings the rewriter must agree on with the server behind it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct H2Limits {
    /// The server's `SETTINGS_MAX_FRAME_SIZE`: rewritten blocks are split into frames of at
    /// most this size. The server must be configured with the same value.
    pub(crate) max_frame_size: u32,
    /// The server's HPACK decoder table size (`SETTINGS_HEADER_TABLE_SIZE`, 4096 unless the
    /// server announces another, which tonic's does not): the largest table the client may ask
    /// for.
    pub(crate) header_table_size: usize,
}

/// A Unix stream whose incoming HTTP/2 header blocks carry an `:authority` h2 accepts; see the
/// module documentation.
pub(crate) struct AuthorityRewrite<IO> {
    io: IO,
    /// Bytes from the client. `buf[..ready]` is ready for the server, `buf[ready..scanned]` is
    /// an incomplete header block held back, `buf[scanned..]` is not looked at yet.
    buf: BytesMut,
    ready: usize,
    scanned: usize,
    state: State,
    /// Frame bytes still to pass through unchanged (the rest of a frame that is not a header
    /// block, or the preface).
    verbatim: usize,
    /// The stream of the header block held back, if any.
    block_stream: Option<u32>,
    /// Whether this connection's header blocks are re-encoded: decided by its first block,
    /// rewritten when its `:authority` is one h2 refuses. From then on every block is
    /// re-encoded (the server's HPACK table must never see the client's table entries).
    rewriting: bool,
    eof: bool,
    limits: H2Limits,
    decoder: loona_hpack::Decoder<'static>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading frames and rewriting header blocks.
    Frames,
    /// Something was not understood: everything passes through unchanged from here on.
    Verbatim,
}

impl<IO> AuthorityRewrite<IO> {
    /// Wraps the server side of an accepted connection.
    pub(crate) fn new(io: IO, limits: H2Limits) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(limits.header_table_size);
        decoder.set_max_table_size(limits.header_table_size);
        Self {
            io,
            buf: BytesMut::new(),
            ready: 0,
            scanned: 0,
            state: State::Frames,
            verbatim: PREFACE_LEN,
            block_stream: None,
            rewriting: false,
            eof: false,
            limits,
            decoder,
        }
    }

    /// Looks at `buf[scanned..]` frame by frame, as far as complete frames allow: frames that
    /// are not part of a header block become ready as they are, complete header blocks become
    /// ready rewritten.
    fn scan(&mut self) {
        loop {
            if self.state == State::Verbatim {
                self.scanned = self.buf.len();
                self.ready = self.scanned;
                return;
            }
            let available = self.buf.len() - self.scanned;
            if self.verbatim > 0 {
                let take = self.verbatim.min(available);
                if take == 0 {
                    return;
                }
                self.verbatim -= take;
                self.scanned += take;
                self.ready = self.scanned;
                continue;
            }
            if available < FRAME_HEADER_LEN {
                return;
            }
            let header = &self.buf[self.scanned..self.scanned + FRAME_HEADER_LEN];
            let length = frame_length(header);
            let (kind, flags) = (header[3], header[4]);
            let stream =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let carries_fragment = kind == HEADERS || kind == CONTINUATION;
            if !carries_fragment && self.block_stream.is_none() {
                self.verbatim = FRAME_HEADER_LEN + length;
                continue;
            }
            // A header block's frames are held until the block is complete.
            let well_formed = match (kind, self.block_stream) {
                (HEADERS, None) => true,
                (CONTINUATION, Some(open)) => open == stream,
                _ => false,
            };
            let block_so_far = self.scanned - self.ready;
            if !well_formed
                || length > self.limits.max_frame_size as usize
                || block_so_far + FRAME_HEADER_LEN + length > MAX_HEADER_BLOCK
            {
                self.state = State::Verbatim;
                continue;
            }
            if available < FRAME_HEADER_LEN + length {
                return;
            }
            self.block_stream = Some(stream);
            self.scanned += FRAME_HEADER_LEN + length;
            if flags & END_HEADERS != 0 {
                self.block_stream = None;
                if self.rewrite_block().is_err() {
                    self.state = State::Verbatim;
                }
            }
        }
    }

    /// Replaces the complete header block `buf[ready..scanned]` by its rewritten form.
    fn rewrite_block(&mut self) -> Result<(), Malformed> {
        let block = &self.buf[self.ready..self.scanned];
        let first = parse_headers_frame(block)?;
        let mut fragments = first.fragment.to_vec();
        let mut rest = &block[first.frame_len..];
        while !rest.is_empty() {
            let length = frame_length(rest);
            fragments.extend_from_slice(&rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + length]);
            rest = &rest[FRAME_HEADER_LEN + length..];
        }
        let mut fields = Vec::new();
        self.decoder
            .decode_with_cb(&fragments, |name, value| {
                fields.push((name.into_owned(), value.into_owned()));
            })
            .map_err(|_| Malformed)?;
        if !self.rewriting {
            let refused = fields.iter().any(|(name, value)| {
                name.as_slice() == b":authority" && !is_valid_authority(value)
            });
            if !refused {
                // A client whose first request h2 accepts as it is (tonic, grpc-go, Envoy, the
                // `spiffe` crate) keeps its authority: its connection passes unchanged from
                // here on, at no cost, and h2 decodes its header blocks itself.
                self.ready = self.scanned;
                self.state = State::Verbatim;
                return Ok(());
            }
            self.rewriting = true;
        }
        let mut encoded = Vec::with_capacity(fragments.len() * 2);
        for (name, value) in &fields {
            let value = if name.as_slice() == b":authority" && !is_valid_authority(value) {
                b"localhost".as_slice()
            } else {
                value.as_slice()
            };
            encode_literal(name, value, &mut encoded);
        }
        let mut frames = BytesMut::with_capacity(encoded.len() + 2 * FRAME_HEADER_LEN + 5);
        write_header_frames(
            &first,
            &encoded,
            self.limits.max_frame_size as usize,
            &mut frames,
        );

        let tail = self.buf.split_off(self.scanned);
        self.buf.truncate(self.ready);
        self.buf.extend_from_slice(&frames);
        self.ready = self.buf.len();
        self.scanned = self.ready;
        self.buf.unsplit(tail);
        Ok(())
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityRewrite<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.ready -= n;
                this.scanned -= n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever is held back goes on as it is, for h2 to report.
                this.state = State::Verbatim;
                this.scan();
                if this.ready == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.state == State::Verbatim && this.buf.is_empty() {
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            this.buf.reserve(READ_CHUNK);
            if std::task::ready!(poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf))? == 0 {
                this.eof = true;
            } else {
                this.scan();
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityRewrite<IO> {
    fedhub_idle::delegate_async_write!(io);
}

impl<IO: Connected> Connected for AuthorityRewrite<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// A header block the rewriter does not take apart; passed on unchanged.
#[derive(Debug)]
struct Malformed;

/// The parts of a `HEADERS` frame that are kept when its block is re-encoded.
struct HeadersFrame<'a> {
    frame_len: usize,
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<&'a [u8]>,
    fragment: &'a [u8],
}

fn frame_length(frame: &[u8]) -> usize {
    usize::from(frame[0]) << 16 | usize::from(frame[1]) << 8 | usize::from(frame[2])
}

/// Splits the `HEADERS` frame at the start of `block` (complete, as checked by the scan).
fn parse_headers_frame(block: &[u8]) -> Result<HeadersFrame<'_>, Malformed> {
    let length = frame_length(block);
    let flags = block[4];
    let mut payload = &block[FRAME_HEADER_LEN..FRAME_HEADER_LEN + length];
    if flags & PADDED != 0 {
        let (&pad, rest) = payload.split_first().ok_or(Malformed)?;
        let keep = rest.len().checked_sub(usize::from(pad)).ok_or(Malformed)?;
        payload = &rest[..keep];
    }
    let priority = if flags & PRIORITY != 0 {
        let (priority, rest) = payload.split_at_checked(5).ok_or(Malformed)?;
        payload = rest;
        Some(priority)
    } else {
        None
    };
    Ok(HeadersFrame {
        frame_len: FRAME_HEADER_LEN + length,
        stream: [block[5], block[6], block[7], block[8]],
        end_stream: flags & END_STREAM != 0,
        priority,
        fragment: payload,
    })
}

/// Writes `block` as a `HEADERS` frame (with the original's stream, `END_STREAM` and priority)
/// followed by as many `CONTINUATION` frames as `max_frame_size` requires.
fn write_header_frames(
    first: &HeadersFrame<'_>,
    block: &[u8],
    max_frame_size: usize,
    out: &mut BytesMut,
) {
    let priority = first.priority.unwrap_or_default();
    let mut rest = block;
    let mut kind = HEADERS;
    loop {
        let room = max_frame_size - if kind == HEADERS { priority.len() } else { 0 };
        let (chunk, after) = rest.split_at(room.min(rest.len()));
        let mut flags = 0;
        if kind == HEADERS {
            if first.end_stream {
                flags |= END_STREAM;
            }
            if first.priority.is_some() {
                flags |= PRIORITY;
            }
        }
        if after.is_empty() {
            flags |= END_HEADERS;
        }
        let length = if kind == HEADERS { priority.len() } else { 0 } + chunk.len();
        // At most `max_frame_size`, which fits the 24-bit length field.
        out.put_slice(&length.to_be_bytes()[size_of::<usize>() - 3..]);
        out.put_u8(kind);
        out.put_u8(flags);
        out.put_slice(&first.stream);
        if kind == HEADERS {
            out.put_slice(priority);
        }
        out.put_slice(chunk);
        if after.is_empty() {
            return;
        }
        rest = after;
        kind = CONTINUATION;
    }
}

/// Whether h2 accepts `value` as `:authority` (it parses it as a URI authority).
fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// Appends a "literal header field without indexing, new name" representation (RFC 7541
/// §6.2.2) with plain (not Huffman-coded) strings.
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0);
    encode_string(name, out);
    encode_string(value, out);
}

/// An HPACK string literal without Huffman coding: the length as an integer with a 7-bit
/// prefix (RFC 7541 §5.1, §5.2), then the octets.
fn encode_string(value: &[u8], out: &mut Vec<u8>) {
    const PREFIX_MAX: usize = 0x7f;
    let low_byte = |n: usize| n.to_le_bytes()[0];
    if value.len() < PREFIX_MAX {
        out.push(low_byte(value.len()));
    } else {
        out.push(low_byte(PREFIX_MAX));
        let mut rest = value.len() - PREFIX_MAX;
        while rest >= 0x80 {
            out.push(0x80 | (low_byte(rest) & 0x7f));
            rest >>= 7;
        }
        out.push(low_byte(rest));
    }
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    //! The rewriter in front of a real tonic server, driven by a hand-written HTTP/2 client that
    //! sends exactly the bytes under test; and the same requests without the rewriter, which
    //! h2 must still refuse (if that test fails, h2 has become lenient and the rewriter may go).

    use std::path::Path;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{UnixListener, UnixStream};

    use super::*;

    const LIMITS: H2Limits = H2Limits {
        max_frame_size: 16 * 1024,
        header_table_size: 4096,
    };
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const RST_STREAM: u8 = 0x3;
    const SOCKET_PATH: &[u8] = b"/run/fedhub/agent.sock";
    const PERCENT_ENCODED: &[u8] = b"%2Frun%2Ffedhub%2Fagent.sock";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A gRPC request header block; `authority` as given, or none at all.
    fn request_block(authority: Option<&[u8]>) -> Vec<u8> {
        let mut block = Vec::new();
        encode_literal(b":method", b"POST", &mut block);
        encode_literal(b":scheme", b"http", &mut block);
        encode_literal(b":path", b"/fedhub.test.Nothing/Call", &mut block);
        if let Some(authority) = authority {
            encode_literal(b":authority", authority, &mut block);
        }
        encode_literal(b"content-type", b"application/grpc", &mut block);
        encode_literal(b"te", b"trailers", &mut block);
        block
    }

    fn connection_start() -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes
    }

    /// A tonic server with one (reflection) service on a fresh socket; with the rewriter or
    /// with plain h2.
    fn serve(path: &Path, rewrite: bool) {
        let listener = UnixListener::bind(path).unwrap();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(fedhub_proto::WORKLOAD_DESCRIPTOR_SET)
            .build_v1()
            .unwrap();
        let server = tonic::transport::Server::builder()
            .max_frame_size(LIMITS.max_frame_size)
            .add_service(reflection);
        tokio::spawn(async move {
            if rewrite {
                let incoming = futures::stream::unfold(listener, |l| async move {
                    let accepted = l
                        .accept()
                        .await
                        .map(|(s, _)| AuthorityRewrite::new(s, LIMITS));
                    Some((accepted, l))
                });
                server.serve_with_incoming(incoming).await
            } else {
                let incoming = futures::stream::unfold(listener, |l| async move {
                    Some((l.accept().await.map(|(s, _)| s), l))
                });
                server.serve_with_incoming(incoming).await
            }
        });
    }

    /// What the server did with stream 1.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        /// Answered with headers (tonic's `UNIMPLEMENTED` for the unknown method): the request
        /// got past h2.
        Answered,
        /// Reset the stream with this error code.
        Reset(u32),
        /// Closed the connection with this error code.
        GoAway(u32),
    }

    /// Sends `bytes` after the connection preface and reads until the server decides stream 1.
    async fn exchange(path: &Path, bytes: &[u8]) -> Outcome {
        let mut stream = UnixStream::connect(path).await.unwrap();
        let mut sent = connection_start();
        sent.extend_from_slice(bytes);
        stream.write_all(&sent).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut head = [0u8; FRAME_HEADER_LEN];
                stream.read_exact(&mut head).await.unwrap();
                let mut payload = vec![0; frame_length(&head)];
                stream.read_exact(&mut payload).await.unwrap();
                let code = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().unwrap());
                let on_stream_1 = head[5..9] == [0, 0, 0, 1];
                match head[3] {
                    HEADERS if on_stream_1 => return Outcome::Answered,
                    RST_STREAM if on_stream_1 => return Outcome::Reset(code(0)),
                    GOAWAY => return Outcome::GoAway(code(4)),
                    _ => {}
                }
            }
        })
        .await
        .unwrap()
    }

    fn request(authority: Option<&[u8]>) -> Vec<u8> {
        frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &request_block(authority),
        )
    }

    const PROTOCOL_ERROR: u32 = 0x1;

    #[tokio::test]
    async fn every_authority_form_reaches_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        serve(&path, true);
        for authority in [
            Some(SOCKET_PATH),
            Some(PERCENT_ENCODED),
            Some(b"".as_slice()),
            Some(b"localhost".as_slice()),
            None,
        ] {
            let shown = authority.map(String::from_utf8_lossy);
            assert_eq!(
                exchange(&path, &request(authority)).await,
                Outcome::Answered,
                "authority {shown:?}"
            );
        }
    }

    #[tokio::test]
    async fn plain_h2_still_refuses_unix_socket_authorities() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        serve(&path, false);
        for authority in [SOCKET_PATH, PERCENT_ENCODED, b""] {
            assert_eq!(
                exchange(&path, &request(Some(authority))).await,
                Outcome::Reset(PROTOCOL_ERROR),
                "h2 accepts {:?} now: the rewriter in front of the Workload API may be removed",
                String::from_utf8_lossy(authority)
            );
        }
        assert_eq!(
            exchange(&path, &request(Some(b"localhost"))).await,
            Outcome::Answered
        );
    }

    #[tokio::test]
    async fn padding_priority_and_continuations_are_understood() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        serve(&path, true);
        let block = request_block(Some(PERCENT_ENCODED));
        let (head, tail) = block.split_at(10);
        let mut payload = vec![3]; // pad length
        payload.extend_from_slice(&[0, 0, 0, 0, 15]); // depends on stream 0, weight 16
        payload.extend_from_slice(head);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut bytes = frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload);
        bytes.extend(frame(CONTINUATION, END_HEADERS, 1, tail));
        assert_eq!(exchange(&path, &bytes).await, Outcome::Answered);
    }

    #[tokio::test]
    async fn the_clients_dynamic_table_is_followed_across_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        serve(&path, true);
        // Stream 1 adds `:authority: <socket path>` to the table (literal with incremental
        // indexing, name from static entry 1); stream 3 refers to it (dynamic entry 62).
        let fields = |authority: &[u8]| {
            let mut block = authority.to_vec();
            block.extend(request_block(None));
            block
        };
        let mut indexed = vec![0x41];
        encode_string(PERCENT_ENCODED, &mut indexed);
        let mut bytes = frame(HEADERS, END_HEADERS | END_STREAM, 1, &fields(&indexed));
        bytes.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &fields(&[0x80 | 0x3e]),
        ));
        let mut stream = UnixStream::connect(&path).await.unwrap();
        let mut sent = connection_start();
        sent.extend(bytes);
        stream.write_all(&sent).await.unwrap();
        let mut answered = std::collections::BTreeSet::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while answered.len() < 2 {
                let mut head = [0u8; FRAME_HEADER_LEN];
                stream.read_exact(&mut head).await.unwrap();
                let mut payload = vec![0; frame_length(&head)];
                stream.read_exact(&mut payload).await.unwrap();
                let id = u32::from_be_bytes(head[5..9].try_into().unwrap());
                assert!(
                    head[3] != RST_STREAM && head[3] != GOAWAY,
                    "refused: {head:?}"
                );
                if head[3] == HEADERS {
                    answered.insert(id);
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(answered.into_iter().collect::<Vec<_>>(), [1, 3]);
    }

    #[tokio::test]
    async fn a_block_too_large_for_one_frame_is_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        serve(&path, true);
        // A Huffman-free re-encoding grows the block; a block close to the frame size limit
        // must come out as HEADERS + CONTINUATION. h2's header list limit (16 KiB by default
        // in tonic) is above the 12 KiB used here.
        let mut block = request_block(Some(PERCENT_ENCODED));
        encode_literal(b"x-large", &vec![b'a'; 12 * 1024], &mut block);
        let first = HeadersFrame {
            frame_len: 0,
            stream: [0, 0, 0, 1],
            end_stream: true,
            priority: None,
            fragment: &[],
        };
        let mut sink = BytesMut::new();
        write_header_frames(&first, &[0; 10_000], 4096, &mut sink);
        // 10 000 bytes in frames of 4096: HEADERS, CONTINUATION, CONTINUATION(END_HEADERS).
        assert_eq!(sink.len(), 10_000 + 3 * FRAME_HEADER_LEN);
        assert_eq!((sink[3], sink[4]), (HEADERS, END_STREAM));
        let second = FRAME_HEADER_LEN + 4096;
        assert_eq!((sink[second + 3], sink[second + 4]), (CONTINUATION, 0));
        let third = second + FRAME_HEADER_LEN + 4096;
        assert_eq!(
            (sink[third + 3], sink[third + 4]),
            (CONTINUATION, END_HEADERS)
        );
        assert_eq!(frame_length(&sink[third..]), 10_000 - 2 * 4096);

        let bytes = frame(HEADERS, END_HEADERS | END_STREAM, 1, &block);
        assert_eq!(exchange(&path, &bytes).await, Outcome::Answered);
    }

    #[tokio::test]
    async fn malformed_input_gets_the_answer_plain_h2_gives() {
        let dir = tempfile::tempdir().unwrap();
        let (rewriting, plain) = (dir.path().join("r"), dir.path().join("p"));
        serve(&rewriting, true);
        serve(&plain, false);
        let block = request_block(Some(b"localhost"));
        // A frame between HEADERS and its CONTINUATION.
        let mut interleaved = frame(HEADERS, END_STREAM, 1, &block[..5]);
        interleaved.extend(frame(PING, 0, 0, &[0; 8]));
        interleaved.extend(frame(CONTINUATION, END_HEADERS, 1, &block[5..]));
        let cases = [
            ("a frame inside a header block", interleaved),
            (
                "an HPACK index nobody defined",
                frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x80 | 0x7f, 0x7f]),
            ),
            (
                "padding longer than the frame",
                frame(HEADERS, END_HEADERS | END_STREAM | PADDED, 1, &[200, 0x82]),
            ),
            (
                "a CONTINUATION without HEADERS",
                frame(CONTINUATION, END_HEADERS, 1, &block),
            ),
            (
                "a truncated HPACK string",
                frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x00, 0x7f]),
            ),
        ];
        for (what, bytes) in cases {
            let expected = exchange(&plain, &bytes).await;
            assert!(
                matches!(expected, Outcome::GoAway(_) | Outcome::Reset(_)),
                "{what}: {expected:?}"
            );
            assert_eq!(exchange(&rewriting, &bytes).await, expected, "{what}");
        }
    }

    /// An in-memory connection that hands out its bytes `step` at a time.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let end = self
                .at
                .saturating_add(self.step)
                .min(self.data.len())
                .min(self.at + out.remaining());
            out.put_slice(&self.data[self.at..end]);
            self.at = end;
            Poll::Ready(Ok(()))
        }
    }

    async fn rewritten(data: &[u8], step: usize) -> Vec<u8> {
        let mut rewriter = AuthorityRewrite::new(
            Trickle {
                data: data.to_vec(),
                at: 0,
                step,
            },
            LIMITS,
        );
        let mut out = Vec::new();
        rewriter.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_output_does_not_depend_on_how_the_input_is_split() {
        let mut data = connection_start();
        data.extend(request(Some(SOCKET_PATH)));
        data.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 2, 8, 1])); // DATA
        data.extend(request(Some(b"localhost")));
        let whole = rewritten(&data, usize::MAX).await;
        for step in [1, 2, 3, 7, 9, 100] {
            assert_eq!(rewritten(&data, step).await, whole, "step {step}");
        }
        // The preface and the DATA frame pass unchanged; the authority is replaced.
        assert!(whole.starts_with(&connection_start()));
        let mut decoder = loona_hpack::Decoder::new();
        let block = &whole[PREFACE.len() + 2 * FRAME_HEADER_LEN..];
        let fields = decoder
            .decode(&block[..frame_length(&whole[PREFACE.len() + FRAME_HEADER_LEN..])])
            .unwrap();
        assert!(fields.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
        assert_eq!(fields.len(), 6);
    }

    #[tokio::test]
    async fn a_connection_whose_first_authority_h2_accepts_passes_unchanged() {
        for first in [Some(b"localhost".as_slice()), None] {
            let mut data = connection_start();
            data.extend(request(first));
            data.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 2, 8, 1]));
            // Even a later authority h2 refuses is left for h2: clients keep one per
            // connection, and the first block decides.
            data.extend(request(Some(SOCKET_PATH)));
            for step in [1, 7, usize::MAX] {
                assert_eq!(rewritten(&data, step).await, data, "{first:?} step {step}");
            }
        }
    }
}
