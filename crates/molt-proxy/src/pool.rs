//! Keep-alive HTTP/1.1 connections to upstreams, kept per target.
//!
//! Hand-written rather than hyper-util's pooled client because every request
//! crosses it (profiled, BENCHMARKS.md): that client keys one pool for all
//! targets behind one mutex, races a connect against each checkout, and
//! loses the request when the connection is refused, so the proxy had to
//! copy each request's headers in case another replica was needed. Here
//! each target keeps its own idle list (a lock held for a push or a pop,
//! shared only by that target's requests), and a request is handed to a
//! connection only once that connection exists: a refused connect gives
//! the request back untouched.
//!
//! Lists per worker thread were tried and measured: with tokio's work
//! stealing, connections are returned on one worker and wanted on another,
//! and at 2 threads and 256 client connections the proxy held over 1,000
//! upstream connections (60 MiB) instead of about 256.
//!
//! A connection is closed when its target closes (drained or cut), when the
//! upstream closes it, or once it has idled past `IDLE_TIMEOUT` (checked
//! when a connection is returned to that target).

use std::sync::{Arc, Mutex, PoisonError};
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
}

impl Conn {
    /// Puts the connection back on its target's idle list once its
    /// response has been read to the end. One that cannot take another
    /// request (the upstream said `close`, or it was upgraded) is dropped.
    pub fn release(self, target: &TargetState) {
        if self.sender.is_closed() || target.is_closed() {
            return;
        }
        target.idle.put(self);
    }
}

/// A target's idle connections, most recently used last.
#[derive(Default)]
pub struct IdleConns {
    list: Mutex<IdleList>,
}

#[derive(Default)]
struct IdleList {
    conns: Vec<(Conn, Instant)>,
    swept: Option<Instant>,
}

impl IdleConns {
    fn lock(&self) -> std::sync::MutexGuard<'_, IdleList> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Option<Conn> {
        self.lock().conns.pop().map(|(conn, _)| conn)
    }

    fn put(&self, conn: Conn) {
        let now = Instant::now();
        let mut list = self.lock();
        if list.swept.is_none_or(|at| now - at >= SWEEP_EVERY) {
            list.swept = Some(now);
            // Dropped outside the lock would be nicer, but dropping a
            // sender only signals its connection task.
            list.conns
                .retain(|(c, at)| !c.sender.is_closed() && now - *at < IDLE_TIMEOUT);
        }
        list.conns.push((conn, now));
    }

    /// Closes every idle connection (the target closed).
    pub fn clear(&self) {
        let drained = std::mem::take(&mut self.lock().conns);
        drop(drained);
    }
}

impl std::fmt::Debug for IdleConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleConns").finish_non_exhaustive()
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

/// Sends `req` (origin-form URI, `Host` set) to `target` on one of its
/// idle connections, or on a new one. Returns the response head
/// and the connection, for `Conn::release` once the body is read.
pub async fn send(
    target: &Arc<TargetState>,
    mut req: Request<UpstreamBody>,
) -> Result<(Response<Incoming>, Conn), SendError> {
    // Idle connections the upstream closed meanwhile hand the request back
    // unsent: the next one is tried. Each pass takes one off the list, and
    // a new connection ends the loop.
    loop {
        let (mut conn, fresh) = match idle_conn(target).await {
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
async fn idle_conn(target: &TargetState) -> Option<Conn> {
    loop {
        let mut conn = target.idle.take()?;
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
    Ok(Conn { sender })
}
