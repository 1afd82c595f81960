//! Raw HTTP/2 for tests of servers against clients that misbehave on purpose (open a
//! connection and send nothing, ignore pings): the client preface, and the frames a server
//! sent.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The client connection preface and an empty SETTINGS frame.
pub const PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// Frame type SETTINGS.
pub const SETTINGS: u8 = 0x4;
/// Frame type PING.
pub const PING: u8 = 0x6;
/// Frame type GOAWAY.
pub const GOAWAY: u8 = 0x7;
/// Setting SETTINGS_MAX_CONCURRENT_STREAMS.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// One frame: its type, its flags and its payload.
pub type Frame = (u8, u8, Vec<u8>);

/// The HTTP/2 frames in `bytes`; a cut-off last frame is left out.
#[must_use]
pub fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes.len() < 9 + length {
            break;
        }
        frames.push((bytes[3], bytes[4], bytes[9..9 + length].to_vec()));
        bytes = &bytes[9 + length..];
    }
    frames
}

/// The value of `id` in the server's first (non-ACK) SETTINGS frame.
#[must_use]
pub fn setting(frames: &[Frame], id: u16) -> Option<u32> {
    let (_, _, payload) = frames
        .iter()
        .find(|(kind, flags, _)| *kind == SETTINGS && flags & 1 == 0)?;
    payload.chunks_exact(6).find_map(|entry| {
        (u16::from_be_bytes([entry[0], entry[1]]) == id)
            .then(|| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
    })
}

/// Whether `frames` hold one of type `kind` that is not an acknowledgement.
#[must_use]
pub fn has(frames: &[Frame], kind: u8) -> bool {
    frames
        .iter()
        .any(|(k, flags, _)| *k == kind && flags & 1 == 0)
}

/// Reads until the peer closes the connection (end of stream or error); panics when it stays
/// open for `within`. Returns what was read.
///
/// # Panics
/// When the connection is still open after `within`.
pub async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    received
}
