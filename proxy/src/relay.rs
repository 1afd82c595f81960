//! TCP mode: bytes relayed both ways until either side closes, or until none has moved in
//! either direction for the idle timeout (`limits.tcp_idle_timeout`).
//!
//! Every byte relayed is first read from one of the two streams, so each stream is wrapped in
//! a `Marked` stream that notes the time of its last read in a clock both share, and writes go
//! straight through ([`fedhub_idle::delegate_async_write!`]). A watchdog sleeps until the
//! newest note plus the timeout; it wakes once per timeout, not once per read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The copy buffer from the plain side to the TLS side: one read of up to 64 KiB becomes four
/// full 16 KiB records sent in one `writev`, where tokio's default 8 KiB would make twice as
/// many system calls and half-full records.
pub const PLAIN_TO_TLS_BUFFER: usize = 64 * 1024;

/// The copy buffer from the TLS side to the plain side: a TLS stream yields at most one
/// record's plaintext (16 KiB) per read, so a larger buffer would sit unused.
pub const TLS_TO_PLAIN_BUFFER: usize = 16 * 1024;

/// The read buffer under each TLS stream. rustls reads at most 4 KiB per call, four or more
/// system calls per full record; this buffer makes it one per 32 KiB.
pub const TLS_READ_BUFFER: usize = 32 * 1024;

/// Why a relay ended other than by both sides closing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// No byte moved in either direction for the idle timeout.
    #[error("no byte in either direction for {0:?}; closed as idle")]
    Idle(Duration),
    /// Reading or writing one of the sides failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// When one connection last moved a byte, as milliseconds since it started.
#[derive(Debug)]
struct LastActivity {
    start: Instant,
    millis: AtomicU64,
}

impl LastActivity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            millis: AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(elapsed, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }

    /// Completes once nothing has been marked for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let deadline = self.last() + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream whose reads mark the connection as active.
struct Marked<S> {
    stream: S,
    activity: Arc<LastActivity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Marked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.mark();
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Marked<S> {
    fedhub_idle::delegate_async_write!(stream);
}

/// Relays bytes between `plain` and `tls` until both have closed their sending side (each
/// close is passed on as a shutdown of the other's), or nothing moved for `idle_timeout`;
/// returns the bytes sent from `plain` to `tls` and from `tls` to `plain`.
///
/// # Errors
/// [`RelayError::Idle`] when the connection went idle (both streams are then dropped, which
/// closes them), [`RelayError::Io`] when a side failed.
pub async fn relay<P, T>(plain: P, tls: T, idle_timeout: Duration) -> Result<(u64, u64), RelayError>
where
    P: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(LastActivity::new());
    let mut plain = Marked {
        stream: plain,
        activity: Arc::clone(&activity),
    };
    let mut tls = Marked {
        stream: tls,
        activity: Arc::clone(&activity),
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut plain,
        &mut tls,
        PLAIN_TO_TLS_BUFFER,
        TLS_TO_PLAIN_BUFFER,
    );
    tokio::select! {
        copied = copy => Ok(copied?),
        () = activity.idle(idle_timeout) => Err(RelayError::Idle(idle_timeout)),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, duplex};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_relay_ends_once_no_byte_moved_for_the_timeout() {
        let (mut client, a) = duplex(1024);
        let (b, mut server) = duplex(1024);
        let timeout = Duration::from_secs(10);
        let relay = tokio::spawn(relay(a, b, timeout));
        // Traffic in one direction only keeps it open.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"ping").await.unwrap();
            let mut buf = [0; 4];
            server.read_exact(&mut buf).await.unwrap();
        }
        assert!(!relay.is_finished());
        let started = Instant::now();
        let ended = relay.await.unwrap();
        assert!(matches!(ended, Err(RelayError::Idle(t)) if t == timeout));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(9), "{waited:?}");
        assert!(waited <= Duration::from_secs(11), "{waited:?}");
        // The relay dropped its ends: both sides see the close.
        let mut buf = [0; 1];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_relay_passes_bytes_and_closes_both_ways() {
        let (mut client, a) = duplex(1024);
        let (b, mut server) = duplex(1024);
        let relay = tokio::spawn(relay(a, b, Duration::from_secs(60)));
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        server.write_all(b"answer").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"answer");
        assert_eq!(relay.await.unwrap().unwrap(), (7, 6));
    }
}
