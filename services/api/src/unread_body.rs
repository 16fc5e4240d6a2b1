//! A request whose body the answer did not need (a 401 or 403 decided from the headers, a
//! DELETE sent with a body) leaves that body on the connection. A small one is read and dropped
//! once the answer is ready, so the connection serves the client's next request; otherwise
//! (too large, chunked, or not sent in time) the answer says `Connection: close`, and the
//! server closes it. Without the header, a client keeping the connection alive would learn
//! that only when its next request (perhaps a POST) failed on the closed socket.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

use crate::extract::declared_length;

/// The largest unread body drained rather than closed over.
const DRAIN_LIMIT: u64 = 64 * 1024;
/// How long the answer waits for such a body (a client may send it after the headers, or
/// only once told to continue).
const DRAIN_WAIT: Duration = Duration::from_millis(250);

pub async fn close_if_unread(request: Request, next: Next) -> Response {
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    let length = declared_length(request.headers());
    if !chunked && length.unwrap_or(0) == 0 {
        return next.run(request).await;
    }
    let watch = Arc::new(Watch::default());
    let request = request.map(|inner| Body::new(Watched { inner: Some(inner), watch: Arc::clone(&watch) }));
    let mut response = next.run(request).await;
    if watch.read_to_end.load(Ordering::Acquire) {
        return response;
    }
    let unread = watch.unread.lock().ok().and_then(|mut unread| unread.take());
    let drained = match (unread, length) {
        (Some(body), Some(length)) if !chunked && length <= DRAIN_LIMIT => {
            let limit = usize::try_from(DRAIN_LIMIT).unwrap_or(usize::MAX);
            matches!(tokio::time::timeout(DRAIN_WAIT, axum::body::to_bytes(body, limit)).await, Ok(Ok(_)))
        }
        _ => false,
    };
    if !drained {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// What became of a request's body: read to its end, or left unread (and handed back).
#[derive(Default)]
struct Watch {
    read_to_end: AtomicBool,
    unread: Mutex<Option<Body>>,
}

/// A request body that records when it has given its last frame, and hands itself back to
/// `Watch` when dropped before that.
struct Watched {
    inner: Option<Body>,
    watch: Arc<Watch>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || inner.is_end_stream() {
            self.watch.read_to_end.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(http_body::Body::size_hint).unwrap_or_default()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.watch.read_to_end.load(Ordering::Acquire) {
            return;
        }
        if let (Some(inner), Ok(mut unread)) = (self.inner.take(), self.watch.unread.lock()) {
            *unread = Some(inner);
        }
    }
}
