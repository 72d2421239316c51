//! The response body the proxy sends: either the upstream's, streamed
//! through frame by frame while holding the target's in-flight count, or a
//! small page of the proxy's own.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::pool::Conn;
use crate::target::InFlightGuard;

pub enum ProxyBody {
    /// The request counts as in flight until this body ends or is dropped
    /// (client gone), so a drain waits for slow downloads too. The upstream
    /// connection goes back to the pool when the body has ended, and is
    /// closed with it when not.
    Upstream {
        body: Incoming,
        guard: Option<InFlightGuard>,
        conn: Option<Conn>,
    },
    Fixed(Full<Bytes>),
}

impl ProxyBody {
    pub fn upstream(body: Incoming, guard: InFlightGuard, conn: Conn) -> Self {
        let mut this = ProxyBody::Upstream {
            body,
            guard: Some(guard),
            conn: Some(conn),
        };
        this.release_if_done();
        this
    }

    /// A body passed through without a target to count it on (a request
    /// relayed to the successor proxy after a handover).
    pub fn relayed(body: Incoming) -> Self {
        ProxyBody::Upstream {
            body,
            guard: None,
            conn: None,
        }
    }

    pub fn fixed(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Fixed(Full::new(bytes.into()))
    }

    pub fn empty() -> Self {
        ProxyBody::Fixed(Full::new(Bytes::new()))
    }

    /// Drops the in-flight guard and gives the connection back as soon as
    /// the upstream body is over.
    fn release_if_done(&mut self) {
        if let ProxyBody::Upstream { body, guard, conn } = self {
            if body.is_end_stream() {
                release(conn, guard);
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match this {
            ProxyBody::Upstream { body, guard, conn } => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => release(conn, guard),
                    Poll::Ready(Some(Err(_))) => {
                        conn.take();
                        guard.take();
                    }
                    _ => {}
                }
                polled
            }
            ProxyBody::Fixed(full) => {
                return Pin::new(full)
                    .poll_frame(cx)
                    .map_err(|never| match never {})
            }
        };
        this.release_if_done();
        polled
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Fixed(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Fixed(full) => full.size_hint(),
        }
    }
}

/// Gives the connection back to its target, then ends the in-flight count.
fn release(conn: &mut Option<Conn>, guard: &mut Option<InFlightGuard>) {
    if let (Some(conn), Some(guard)) = (conn.take(), guard.as_ref()) {
        conn.release(guard.target());
    }
    guard.take();
}

/// What the proxy sends upstream: the user's body, streamed on as it
/// arrives and cut at the App's body limit (`Left`), or nothing (`Right`).
pub type UpstreamBody =
    http_body_util::Either<http_body_util::Limited<Incoming>, http_body_util::Empty<Bytes>>;

/// The user's body, failing the upstream request once it passes `max`
/// bytes. Counting is a subtraction per frame; nothing is allocated unless
/// the limit is hit.
pub fn limited(body: Incoming, max: u64) -> UpstreamBody {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    http_body_util::Either::Left(http_body_util::Limited::new(body, max))
}

/// Whether an upstream request failed because the user's body passed its
/// limit (the proxy then answers 413, not 502).
pub fn too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether an upstream exchange failed on the user's side: reading the
/// request body from the user's connection broke (a malformed chunk, a
/// connection closed mid-body). hyper reports that as an error of the body
/// stream whose cause is the user connection's own error; the App is not
/// at fault.
pub fn client_body_failed(e: &hyper::Error) -> bool {
    use std::error::Error as _;
    e.is_user() && e.source().is_some_and(|s| s.is::<hyper::Error>())
}

/// `UpstreamBody` for a request without a body.
pub fn no_body() -> UpstreamBody {
    http_body_util::Either::Right(http_body_util::Empty::new())
}
