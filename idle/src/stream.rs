//! Stream wrappers: [`delegate_async_write!`](crate::delegate_async_write) writes a wrapper's
//! `AsyncWrite` impl when all its writes go straight to the stream it wraps.

#[doc(hidden)]
pub use tokio::io::AsyncWrite;

/// The body of an `AsyncWrite` impl for a stream wrapper (itself `Unpin`) whose writes, vectored
/// ones included, flushes and shutdown all go straight to its field `$field`, an
/// `AsyncWrite + Unpin` stream:
///
/// ```ignore
/// impl AsyncWrite for CallerStream {
///     fedhub_idle::delegate_async_write!(stream);
/// }
/// ```
#[macro_export]
macro_rules! delegate_async_write {
    ($field:ident) => {
        fn poll_write(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            data: &[u8],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            $crate::stream::AsyncWrite::poll_write(
                ::std::pin::Pin::new(&mut self.get_mut().$field),
                cx,
                data,
            )
        }

        fn poll_write_vectored(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            data: &[::std::io::IoSlice<'_>],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            $crate::stream::AsyncWrite::poll_write_vectored(
                ::std::pin::Pin::new(&mut self.get_mut().$field),
                cx,
                data,
            )
        }

        fn is_write_vectored(&self) -> bool {
            $crate::stream::AsyncWrite::is_write_vectored(&self.$field)
        }

        fn poll_flush(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            $crate::stream::AsyncWrite::poll_flush(
                ::std::pin::Pin::new(&mut self.get_mut().$field),
                cx,
            )
        }

        fn poll_shutdown(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            $crate::stream::AsyncWrite::poll_shutdown(
                ::std::pin::Pin::new(&mut self.get_mut().$field),
                cx,
            )
        }
    };
}
