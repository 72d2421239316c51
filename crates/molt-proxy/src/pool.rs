//! Keep-alive HTTP/1.1 connections to upstreams, kept per worker thread.
//!
//! Hand-written rather than hyper-util's pooled client because every request
//! crosses it (profiled, BENCHMARKS.md): that client keeps one pool behind a
//! mutex that every worker takes on every request, races a connect against
//! each checkout, and loses the request when the connection is refused, so
//! the proxy had to copy each request's headers in case another replica was
//! needed. Here each worker thread keeps its own idle connections per target
//! (no lock, nothing shared between workers), and a request is handed to a
//! connection only once that connection exists: a refused connect gives the
//! request back untouched.
//!
//! A connection goes back to the idle list of whichever thread finishes its
//! response; it is closed when its target closes (drained or cut), when the
//! upstream closes it, or once it has idled past `IDLE_TIMEOUT` (checked
//! when that thread next returns a connection).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::UpstreamBody;
use crate::target::TargetState;

/// How long an upstream may take to accept a TCP connection before a 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle keep-alive connections to an upstream are closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a thread looks through its idle connections for old ones.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A connection to one target, ready for one request at a time.
pub struct Conn {
    sender: http1::SendRequest<UpstreamBody>,
    target: u64,
}

impl Conn {
    /// Puts the connection back on this thread's idle list once its
    /// response has been read to the end. One that cannot take another
    /// request (the upstream said `close`, or it was upgraded) is dropped.
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        // Outside a thread's lifetime (tear-down) the connection just closes.
        let _ = IDLE.try_with(|idle| idle.borrow_mut().put(self));
    }
}

/// Why sending failed.
pub enum SendError {
    /// No connection could be made (refused, unreachable, timed out): the
    /// request reached no App. It comes back with the error.
    Connect(std::io::Error, Box<Request<UpstreamBody>>),
    /// The exchange failed once the request was handed to a connection.
    Failed(hyper::Error),
}

/// Sends `req` (origin-form URI, `Host` set) to `target` on an idle
/// connection of this thread, or on a new one. Returns the response head
/// and the connection, for `Conn::release` once the body is read.
pub async fn send(
    target: &Arc<TargetState>,
    mut req: Request<UpstreamBody>,
) -> Result<(Response<Incoming>, Conn), SendError> {
    // Idle connections the upstream closed meanwhile hand the request back
    // unsent: the next one is tried. Each pass takes one off the list, and
    // a new connection ends the loop.
    loop {
        let (mut conn, fresh) = match idle_conn(target.id()).await {
            Some(conn) => (conn, false),
            None => match connect(target).await {
                Ok(conn) => (conn, true),
                Err(e) => return Err(SendError::Connect(e, Box::new(req))),
            },
        };
        match conn.sender.try_send_request(req).await {
            Ok(resp) => return Ok((resp, conn)),
            Err(mut e) => match e.take_message() {
                Some(unsent) if !fresh => req = unsent,
                _ => return Err(SendError::Failed(e.into_error())),
            },
        }
    }
}

/// The most recently used idle connection to `target` that is still open.
async fn idle_conn(target: u64) -> Option<Conn> {
    loop {
        let mut conn = IDLE
            .try_with(|idle| idle.borrow_mut().take(target))
            .ok()
            .flatten()?;
        if conn.sender.is_closed() {
            continue;
        }
        // Released as its response ended, so ready at once or in a moment
        // (the connection task has yet to see the end); an error means it
        // closed.
        if conn.sender.ready().await.is_ok() {
            return Some(conn);
        }
    }
}

/// A new connection to `target`; its task ends with the connection, or when
/// the target closes (which closes it).
async fn connect(target: &Arc<TargetState>) -> std::io::Result<Conn> {
    let addr = target.target.addr.as_str();
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to {addr} took longer than {CONNECT_TIMEOUT:?}"),
            )
        })??;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    let watched = Arc::clone(target);
    tokio::spawn(async move {
        tokio::select! {
            result = conn.with_upgrades() => if let Err(e) = result {
                tracing::debug!(addr = %watched.target.addr, error = %e, "upstream connection ended with an error");
            },
            () = watched.closed() => {}
        }
    });
    Ok(Conn {
        sender,
        target: target.id(),
    })
}

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::new(Idle::default());
}

/// One thread's idle connections, by target id.
#[derive(Default)]
struct Idle {
    by_target: HashMap<u64, Vec<(Conn, Instant)>>,
    swept: Option<Instant>,
}

impl Idle {
    fn take(&mut self, target: u64) -> Option<Conn> {
        let list = self.by_target.get_mut(&target)?;
        let conn = list.pop().map(|(conn, _)| conn);
        if list.is_empty() {
            self.by_target.remove(&target);
        }
        conn
    }

    fn put(&mut self, conn: Conn) {
        let now = Instant::now();
        if self.swept.is_none_or(|at| now - at >= SWEEP_EVERY) {
            self.swept = Some(now);
            self.by_target.retain(|_, list| {
                list.retain(|(c, at)| !c.sender.is_closed() && now - *at < IDLE_TIMEOUT);
                !list.is_empty()
            });
        }
        self.by_target
            .entry(conn.target)
            .or_default()
            .push((conn, now));
    }
}
