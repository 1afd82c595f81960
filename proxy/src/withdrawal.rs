//! De-federation cuts open connections: a connection whose peer belongs to a trust domain that
//! the Workload API stops delivering a bundle for is closed at once, in both directions and in
//! both modes, pooled outbound connections included.
//!
//! Rotation and every other change leave open connections alone (they apply to the next
//! handshake). Removing a trust domain is different: it withdraws trust, and a connection that
//! stayed open would keep a de-federated peer talking to the application for as long as it
//! liked.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use fedhub_core::TrustDomain;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::source::X509Source;

/// A stream to or from a peer of `trust_domain` that fails every read and write (so that its
/// owner closes it) once the source no longer holds a bundle for that trust domain.
pub struct Withdrawable<S> {
    stream: S,
    trust_domain: TrustDomain,
    withdrawn: Pin<Box<dyn Future<Output = ()> + Send>>,
    cut: bool,
}

impl<S> std::fmt::Debug for Withdrawable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Withdrawable")
            .field("trust_domain", &self.trust_domain)
            .field("cut", &self.cut)
            .finish_non_exhaustive()
    }
}

impl<S> Withdrawable<S> {
    /// Wraps `stream`, a connection with a peer of `trust_domain`.
    pub fn new(stream: S, trust_domain: TrustDomain, source: &X509Source) -> Self {
        Self {
            stream,
            withdrawn: Box::pin(source.withdrawn(trust_domain.clone())),
            trust_domain,
            cut: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// `Err` once the trust domain is gone; the first time, says so in the log.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.cut && self.withdrawn.as_mut().poll(cx).is_ready() {
            self.cut = true;
            tracing::warn!(
                trust_domain = %self.trust_domain,
                "connection closed: {} is no longer federated (the Workload API stopped \
                 delivering its bundle)",
                self.trust_domain
            );
        }
        if self.cut {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("{} is no longer federated", self.trust_domain),
            ))
        } else {
            Ok(())
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Withdrawable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Withdrawable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
