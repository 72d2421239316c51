//! The proxy's side of the admin socket: JSON lines in, one JSON line out
//! per request. Only the socket's owner can connect (mode 0600). With
//! `--admin-listen`, the same protocol over TCP for a server on another
//! machine: TLS first (`admin_tls`), then a first line that must carry the
//! admin token.
//!
//! Also the giving side of a handover (see `handover` for the taking
//! side): changes are fenced while the successor starts from our snapshot,
//! and afterwards every request that still reaches us is relayed to it.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, RwLock};

use crate::admin::{read_line, AdminClient, AdminError, Request, Response, MAX_LINE};
use crate::admin_token::{AdminToken, AuthLine};
use crate::fdpass;
use crate::hold::PauseLimits;
use crate::instance::{exe_id, sibling, OwnFile};
use crate::routes::Routes;
use crate::tls::Certs;

/// How long a successor may take, once it has our sockets, to say it serves
/// and owns the admin socket; past it we take everything back.
const HANDOVER_CONFIRM: Duration = Duration::from_secs(20);
/// How long a TCP admin connection may take to send its token line.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket at a temporary path, restricts it to its owner, then
/// renames it over `path`: whoever connects to `path` reaches either the
/// previous socket or this one, never nothing (a successor replaces its
/// predecessor's socket this way), and never one anyone else could use.
pub fn bind(path: &Path) -> anyhow::Result<(UnixListener, OwnFile)> {
    let tmp = sibling(path, "new");
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)
        .map_err(|e| anyhow::anyhow!("binding admin socket {}: {e}", tmp.display()))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| anyhow::anyhow!("restricting admin socket {}: {e}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .map_err(|e| anyhow::anyhow!("placing admin socket {}: {e}", path.display()))
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok((listener, OwnFile::at(path)))
}

/// Where admin requests are carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Authority {
    Here,
    /// Handed over: the successor answers, at this socket path.
    Successor(PathBuf),
}

/// The descriptors a handover passes on (duplicates of ours: passing them
/// does not disturb our own serving until the successor confirms).
pub struct Handoff {
    pub http: OwnedFd,
    pub lock: OwnedFd,
    pub metrics: Option<OwnedFd>,
    pub https: Option<OwnedFd>,
    /// The TCP admin listener (`--admin-listen`), if we have one.
    pub admin: Option<OwnedFd>,
    /// Where users reach us, hence the successor too.
    pub http_addr: SocketAddr,
}

/// What the admin side works with.
pub struct Admin {
    routes: Arc<Routes>,
    /// The HTTPS certificates (in memory only).
    certs: Arc<Certs>,
    path: PathBuf,
    /// Changes take it for reading; a handover takes it for writing from
    /// its snapshot until the successor confirms, so no change can land
    /// between the two and be lost.
    authority: RwLock<Authority>,
    socket: Mutex<OwnFile>,
    handoff: Mutex<Option<Handoff>>,
    /// Set once handed over: the serving task stops accepting.
    handed_over: watch::Sender<bool>,
    /// A fresh listener for the serve loop when we must put our socket
    /// back (a successor that replaced it, then failed).
    rebind: mpsc::Sender<UnixListener>,
}

impl Admin {
    pub fn new(
        routes: Arc<Routes>,
        certs: Arc<Certs>,
        path: PathBuf,
        socket: OwnFile,
        handoff: Handoff,
    ) -> (Arc<Admin>, mpsc::Receiver<UnixListener>) {
        let (rebind, rebound) = mpsc::channel(1);
        let admin = Arc::new(Admin {
            routes,
            certs,
            path,
            authority: RwLock::new(Authority::Here),
            socket: Mutex::new(socket),
            handoff: Mutex::new(Some(handoff)),
            handed_over: watch::Sender::new(false),
            rebind,
        });
        (admin, rebound)
    }

    pub fn handed_over(&self) -> watch::Receiver<bool> {
        self.handed_over.subscribe()
    }

    /// Closes our spare copies of the listening sockets and the lock (at
    /// the end): they would keep the port listening and the data dir
    /// locked after this proxy stopped.
    pub fn drop_handoff(&self) {
        let spare = self
            .handoff
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(spare);
    }

    /// Removes the admin socket if it is still ours (at shutdown).
    pub fn release_socket(&self) {
        self.socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove_if_ours();
    }
}

/// Accepts admin connections until the task is dropped.
pub async fn serve(
    mut listener: UnixListener,
    admin: Arc<Admin>,
    mut rebound: mpsc::Receiver<UnixListener>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(fresh) = rebound.recv() => {
                listener = fresh;
                continue;
            }
        };
        match accepted {
            Ok((stream, _)) => {
                if !peer_allowed(&stream) {
                    continue;
                }
                let admin = Arc::clone(&admin);
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &admin).await {
                        tracing::debug!(error = %e, "admin connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors and the like: back off, don't spin.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Accepts admin connections over TCP (`--admin-listen`) until we hand
/// over (the successor accepts on the same socket from then on).
pub async fn serve_tcp(
    listener: TcpListener,
    admin: Arc<Admin>,
    token: AdminToken,
    tls: tokio_rustls::TlsAcceptor,
) {
    let mut handed_over = admin.handed_over();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Ok(_) = handed_over.wait_for(|done| *done) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (admin, token, tls) = (Arc::clone(&admin), token.clone(), tls.clone());
                tokio::spawn(async move {
                    if let Err(e) = tcp_connection(stream, peer, &admin, &token, &tls).await {
                        tracing::debug!(error = %e, %peer, "admin connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One TCP admin connection: TLS (see `admin_tls`), the token line, then
/// requests as on the socket. A peer without the right token gets one
/// refusal and nothing else; a handover (it passes descriptors) is for the
/// local socket only.
async fn tcp_connection(
    stream: TcpStream,
    peer: SocketAddr,
    admin: &Arc<Admin>,
    token: &AdminToken,
    tls: &tokio_rustls::TlsAcceptor,
) -> std::io::Result<()> {
    let stream = match tokio::time::timeout(AUTH_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "admin connection refused: its TLS handshake failed (another admin token, a client that gave up, or not Molt)");
            return Ok(());
        }
        Err(_) => {
            tracing::warn!(%peer, "admin connection refused: no TLS handshake in time");
            return Ok(());
        }
    };
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    let proved = match tokio::time::timeout(AUTH_TIMEOUT, read_line(&mut reader, &mut line)).await {
        Ok(Ok(())) => serde_json::from_slice::<AuthLine>(&line)
            .map(|offered| token.matches(&offered.auth))
            .unwrap_or(false),
        Ok(Err(_)) | Err(_) => false,
    };
    line.clear();
    if !proved {
        tracing::warn!(%peer, "admin connection without the right token refused");
        let why = "the admin token is missing or wrong: give this proxy (--admin-token-file) and the server (--proxy-peer-token-file) the same token";
        return send(&mut write, &Response::error(why)).await;
    }
    loop {
        if let Err(e) = read_line(&mut reader, &mut line).await {
            if e.kind() == std::io::ErrorKind::InvalidData {
                let why = format!("request line over the admin protocol's {MAX_LINE} bytes");
                let _ = send(&mut write, &Response::error(why)).await;
            }
            return Err(e);
        }
        if line.is_empty() {
            return Ok(());
        }
        let resp = match serde_json::from_slice::<Request>(&line) {
            Ok(Request::Handover | Request::HandoverDone) => Response::error(
                "a handover passes sockets and is only answered on the proxy's local admin socket",
            ),
            Ok(req) => answer(req, admin).await,
            Err(e) => Response::error(format!("invalid request: {e}")),
        };
        send(&mut write, &resp).await?;
    }
}

/// Whether the process at the other end may use the admin socket: the
/// proxy's own user, or root (SO_PEERCRED, asked of the kernel once per
/// admin connection). The socket's 0600 mode says the same, but a mode can
/// be loosened by mistake and a socket handed to another user; the check
/// makes the rule hold whatever happens to the file. Handover included: it
/// passes the listening sockets and the data dir's lock.
fn peer_allowed(stream: &UnixStream) -> bool {
    let own = rustix::process::getuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if uid_allowed(cred.uid(), own) => true,
        Ok(cred) => {
            tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), own_uid = own,
                "admin connection from another user refused");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell who connected to the admin socket; refused");
            false
        }
    }
}

fn uid_allowed(peer: u32, own: u32) -> bool {
    peer == own || peer == 0
}

async fn connection(stream: UnixStream, admin: &Arc<Admin>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        if let Err(e) = read_line(&mut reader, &mut line).await {
            if e.kind() == std::io::ErrorKind::InvalidData {
                let why = format!("request line over the admin protocol's {MAX_LINE} bytes");
                let _ = send(&mut write, &Response::error(why)).await;
            }
            return Err(e);
        }
        if line.is_empty() {
            return Ok(());
        }
        let resp = match serde_json::from_slice::<Request>(&line) {
            Ok(Request::Handover) => {
                give(admin, &mut reader, &mut write).await?;
                continue;
            }
            Ok(req) => answer(req, admin).await,
            Err(e) => Response::error(format!("invalid request: {e}")),
        };
        send(&mut write, &resp).await?;
    }
}

async fn send<W: AsyncWrite + Unpin>(write: &mut W, resp: &Response) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await
}

/// Carries out one request, or relays it once we have handed over.
async fn answer(req: Request, admin: &Admin) -> Response {
    let routes = &admin.routes;
    // Reads and waits need no fence; changes do (see `Admin::authority`).
    let changes = matches!(
        req,
        Request::SetRoute { .. }
            | Request::RemoveRoute { .. }
            | Request::Pause { .. }
            | Request::Resume { .. }
            | Request::PutCert { .. }
            | Request::RemoveCert { .. }
    );
    let fence = if changes {
        Some(admin.authority.read().await)
    } else {
        None
    };
    let authority = match &fence {
        Some(guard) => (**guard).clone(),
        None => admin.authority.read().await.clone(),
    };
    if let Authority::Successor(path) = authority {
        drop(fence);
        return relay(&path, &req).await;
    }
    match req {
        Request::Ping => Response {
            pid: Some(std::process::id()),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            exe_id: Some(exe_id()),
            https_port: admin.certs.https_port(),
            ..Response::ok()
        },
        Request::SetRoute { route } => match routes.set_route(route).await {
            Ok(()) => Response::ok(),
            Err(e) => Response::error(e),
        },
        Request::RemoveRoute { app } => match routes.remove_route(&app).await {
            Ok(()) => Response::ok(),
            Err(e) => Response::error(e),
        },
        Request::ListRoutes => Response {
            routes: Some(routes.list()),
            paused: Some(routes.paused()),
            ..Response::ok()
        },
        Request::WaitDrained {
            app,
            addr,
            timeout_ms,
        } => {
            let (drained, closed) = match routes.app(&app) {
                Some(route) => {
                    route
                        .wait_drained(&addr, Duration::from_millis(timeout_ms))
                        .await
                }
                None => (true, 0),
            };
            Response {
                drained: Some(drained),
                closed: Some(closed),
                ..Response::ok()
            }
        }
        Request::Pause {
            app,
            max_pause_ms,
            max_queued,
        } => match routes.pause(
            &app,
            PauseLimits {
                max_pause_ms,
                max_queued,
            },
        ) {
            Ok(()) => Response::ok(),
            Err(e) => Response::error(e),
        },
        Request::Resume { app } => {
            routes.resume(&app);
            Response::ok()
        }
        Request::PutCert { cert } => {
            let domain = cert.domain.clone();
            match admin.certs.put(cert) {
                Ok(()) => {
                    tracing::info!(%domain, "certificate in force");
                    Response::ok()
                }
                Err(e) => Response::error(format!("the certificate for {domain}: {e}")),
            }
        }
        Request::RemoveCert { domain } => {
            admin.certs.remove(&domain);
            Response::ok()
        }
        Request::ListCerts => Response {
            domains: Some(admin.certs.domains()),
            ..Response::ok()
        },
        Request::SetHttp01 {
            token,
            key_authorization,
        } => {
            admin.certs.set_http01(token, key_authorization);
            Response::ok()
        }
        Request::RemoveHttp01 { token } => {
            admin.certs.remove_http01(&token);
            Response::ok()
        }
        Request::SetAlpn01 { cert } => match admin.certs.set_alpn01(&cert) {
            Ok(()) => Response::ok(),
            Err(e) => Response::error(format!("the TLS-ALPN-01 certificate: {e}")),
        },
        Request::RemoveAlpn01 { domain } => {
            admin.certs.remove_alpn01(&domain);
            Response::ok()
        }
        Request::Handover => Response::error("handover is answered on its own connection"),
        Request::HandoverDone => Response::error(
            "handover_done is only valid on the connection that asked for a handover",
        ),
    }
}

/// A request that reached us after we handed over (it connected before the
/// successor's socket took the path): the successor answers it.
async fn relay(path: &Path, req: &Request) -> Response {
    let client = AdminClient::at(path);
    let timeout = match req {
        Request::WaitDrained { timeout_ms, .. } => {
            Duration::from_millis(*timeout_ms) + Duration::from_secs(15)
        }
        _ => Duration::from_secs(15),
    };
    match client.call(req, timeout).await {
        Ok(resp) => resp,
        Err(AdminError::Refused(message)) => Response::error(message),
        Err(e) => Response::error(format!(
            "this proxy handed over to a new one, which did not answer: {e}"
        )),
    }
}

/// The giving side of a handover, on the connection that asked for it:
/// fence changes, answer with our routes and pauses and pass our sockets and
/// lock, then wait for the successor's `handover_done`. Confirmed: we relay
/// admin requests to it and stop accepting (the serving task drains what it
/// has). Not confirmed in time: we keep serving as if nothing happened, and
/// put our admin socket back if the successor had replaced it.
async fn give(
    admin: &Arc<Admin>,
    reader: &mut BufReader<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    let mut authority = admin.authority.write().await;
    if *authority != Authority::Here {
        return send(
            write,
            &Response::error("this proxy has already handed over"),
        )
        .await;
    }
    let handoff = admin
        .handoff
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let Some(handoff) = handoff else {
        return send(
            write,
            &Response::error("this proxy has already handed over"),
        )
        .await;
    };
    let mut names = vec!["http".to_string(), "lock".to_string()];
    let mut fds: Vec<BorrowedFd<'_>> = vec![handoff.http.as_fd(), handoff.lock.as_fd()];
    if let Some(metrics) = &handoff.metrics {
        names.push("metrics".into());
        fds.push(metrics.as_fd());
    }
    if let Some(https) = &handoff.https {
        names.push("https".into());
        fds.push(https.as_fd());
    }
    if let Some(tcp) = &handoff.admin {
        names.push("admin".into());
        fds.push(tcp.as_fd());
    }
    let resp = Response {
        pid: Some(std::process::id()),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        exe_id: Some(exe_id()),
        routes: Some(admin.routes.list()),
        paused: Some(admin.routes.paused()),
        certs: Some(admin.certs.sources()),
        fds: Some(names),
        ..Response::ok()
    };
    let mut line = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    tracing::info!("handing the listening sockets over to a new proxy");
    let confirmed = match fdpass::send_with_fds(write.as_ref(), &line, &fds).await {
        Ok(()) => {
            let mut answer = Vec::new();
            match tokio::time::timeout(HANDOVER_CONFIRM, read_line(reader, &mut answer)).await {
                Ok(Ok(())) => matches!(
                    serde_json::from_slice::<Request>(&answer),
                    Ok(Request::HandoverDone)
                ),
                Ok(Err(_)) | Err(_) => false,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "passing the sockets failed");
            false
        }
    };
    if !confirmed {
        tracing::warn!("the new proxy did not confirm the handover; this proxy keeps serving");
        *admin.handoff.lock().unwrap_or_else(PoisonError::into_inner) = Some(handoff);
        reclaim_socket(admin).await;
        return Ok(());
    }
    *authority = Authority::Successor(admin.path.clone());
    drop(authority);
    // Stop accepting first, so that requests relayed to the successor (held
    // ones, see `Routes::hand_over`) are not accepted back by us.
    admin.handed_over.send_replace(true);
    tokio::task::yield_now().await;
    admin.routes.hand_over(successor_addr(handoff.http_addr));
    tracing::info!("handed over to the new proxy; finishing what is in flight");
    // Our copies of the sockets and the lock close here; the successor's
    // keep them open (and locked).
    drop(handoff);
    // The successor does not need this answer; it may be gone already.
    let _ = send(write, &Response::ok()).await;
    Ok(())
}

/// Puts our admin socket back at its path if a failed successor replaced
/// it (if it is still ours, there is nothing to do).
async fn reclaim_socket(admin: &Arc<Admin>) {
    let ours = admin
        .socket
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_ours();
    if ours {
        return;
    }
    match bind(&admin.path) {
        Ok((listener, own)) => {
            *admin.socket.lock().unwrap_or_else(PoisonError::into_inner) = own;
            if admin.rebind.send(listener).await.is_err() {
                tracing::error!("cannot serve the reclaimed admin socket");
            } else {
                tracing::info!(path = %admin.path.display(), "admin socket reclaimed");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot reclaim the admin socket"),
    }
}

/// The address a held request is relayed to: the shared listener, reached
/// over loopback when it listens on every address.
fn successor_addr(listen: SocketAddr) -> SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::uid_allowed;

    #[test]
    fn only_the_proxys_user_or_root_may_use_the_admin_socket() {
        assert!(uid_allowed(1000, 1000));
        assert!(uid_allowed(0, 1000));
        assert!(!uid_allowed(1001, 1000));
        assert!(!uid_allowed(65534, 0));
    }
}
