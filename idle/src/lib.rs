//! When a served connection has gone idle.
//!
//! A server gives each connection an [`Activity`] and marks every request with
//! [`Activity::start`]; the request counts as in flight until its [`InFlight`] guard is
//! dropped, which [`Tracked`] does when the response body ends, so a long-lived stream keeps
//! its connection busy for as long as it is open. [`Idle::wait`] completes once nothing has
//! been in flight for a given time, before the first request as between requests; the server
//! then closes the connection (gracefully: an HTTP/2 `GOAWAY`, then [`CLOSE_GRACE`] for
//! requests that crossed it).
//!
//! [`trace`] holds the request tracing layer that every axum router of fedhub applies.
//! [`stream`] holds [`delegate_async_write!`] for stream wrappers that write straight through.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod stream;
pub mod trace;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;

/// How long a closing connection is kept once nothing is in flight: time for requests that
/// crossed the server's `GOAWAY` to arrive and be answered. After it the connection is dropped
/// without waiting for the client to acknowledge the `GOAWAY` (or to finish an HTTP/2
/// handshake it never started), which an idle or hostile client would never do.
pub const CLOSE_GRACE: Duration = Duration::from_millis(250);

/// Counts the requests in flight on one connection.
#[derive(Debug, Clone)]
pub struct Activity(Arc<watch::Sender<usize>>);

/// Waits for the connection of an [`Activity`] to go idle.
#[derive(Debug)]
pub struct Idle(watch::Receiver<usize>);

/// One request in flight; it ends when this is dropped.
#[derive(Debug)]
pub struct InFlight(Arc<watch::Sender<usize>>);

impl Activity {
    /// A connection's counter, with nothing in flight yet, and its idle wait.
    #[must_use]
    pub fn new() -> (Self, Idle) {
        let (sender, receiver) = watch::channel(0);
        (Self(Arc::new(sender)), Idle(receiver))
    }

    /// Marks a request as in flight until the returned guard is dropped.
    #[must_use]
    pub fn start(&self) -> InFlight {
        self.0.send_modify(|in_flight| *in_flight += 1);
        InFlight(Arc::clone(&self.0))
    }

    /// The requests in flight now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        *self.0.borrow()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|in_flight| *in_flight -= 1);
    }
}

impl Idle {
    /// Completes once no request has been in flight for `timeout`; every request started or
    /// finished restarts the wait. Never completes once every [`Activity`] clone is gone.
    pub async fn wait(&mut self, timeout: Duration) {
        loop {
            if self.0.wait_for(|in_flight| *in_flight == 0).await.is_err() {
                return std::future::pending().await;
            }
            tokio::select! {
                () = tokio::time::sleep(timeout) => return,
                changed = self.0.changed() => if changed.is_err() {
                    return std::future::pending().await;
                },
            }
        }
    }
}

/// A response body that keeps its request in flight until it ends or is dropped.
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    in_flight: Option<InFlight>,
}

impl<B> Tracked<B> {
    /// `body`, holding `in_flight` until its last frame.
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            body,
            in_flight: Some(in_flight),
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) {
            this.in_flight = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full, StreamBody};

    use super::*;

    /// Whether `wait` completes within `within` (in paused test time); it goes on waiting
    /// from where it stopped on the next call.
    async fn done_within(wait: &mut Pin<&mut impl Future<Output = ()>>, within: Duration) -> bool {
        tokio::time::timeout(within, wait.as_mut()).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_is_idle_after_the_timeout() {
        let (_activity, mut idle) = Activity::new();
        let wait = idle.wait(Duration::from_secs(10));
        tokio::pin!(wait);
        assert!(!done_within(&mut wait, Duration::from_secs(9)).await);
        assert!(done_within(&mut wait, Duration::from_secs(2)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_keeps_it_busy_and_its_end_restarts_the_wait() {
        let (activity, mut idle) = Activity::new();
        let wait = idle.wait(Duration::from_secs(10));
        tokio::pin!(wait);
        assert!(!done_within(&mut wait, Duration::from_secs(5)).await);
        let request = activity.start();
        assert_eq!(activity.in_flight(), 1);
        assert!(!done_within(&mut wait, Duration::from_secs(60)).await);
        drop(request);
        assert!(!done_within(&mut wait, Duration::from_secs(9)).await);
        assert!(done_within(&mut wait, Duration::from_secs(2)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_body_keeps_its_request_in_flight_until_it_ends() {
        let (activity, _idle) = Activity::new();
        let mut body = Tracked::new(Full::new(Bytes::from_static(b"bundle")), activity.start());
        assert_eq!(activity.in_flight(), 1);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "bundle");
        assert_eq!(activity.in_flight(), 1, "not ended before the end is read");
        assert!(body.frame().await.is_none());
        assert_eq!(activity.in_flight(), 0);

        // A stream that is dropped (the client reset it) ends its request too.
        let (_sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, ()>>(1);
        let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        let body = Tracked::new(StreamBody::new(stream), activity.start());
        assert_eq!(activity.in_flight(), 1);
        drop(body);
        assert_eq!(activity.in_flight(), 0);
    }
}
