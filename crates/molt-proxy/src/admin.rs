//! The admin protocol between `molt server` and `molt proxy`: one JSON
//! object per line over a Unix socket in the data dir (mode 0600), or over
//! TCP from a server on another machine (`molt proxy --admin-listen`), where
//! every connection first proves the admin token (see `admin_token`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

pub use crate::admin_token::AdminToken;
use crate::admin_token::AuthLine;
pub use crate::tls::TlsCert;

/// The file names the proxy keeps in its data dir.
pub const SOCKET_FILE: &str = "proxy.sock";
pub const ROUTES_FILE: &str = "routes.json";
/// Holds the proxy's pid, for messages and for the server to find it.
pub const PID_FILE: &str = "proxy.pid";
/// Locked (flock) for the whole life of a proxy: one proxy per data dir.
pub const LOCK_FILE: &str = "proxy.lock";

/// The longest admin line either side accepts; a route is far smaller.
pub const MAX_LINE: usize = 1 << 20;

/// One upstream of an App: a container's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// `ip:port` the proxy connects to.
    pub addr: String,
    /// Who this is (the container id), for logs and stats.
    pub id: String,
}

/// Everything the proxy knows about one App.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub app: String,
    /// Host names (lowercase, no port) routed to this App.
    pub hosts: Vec<String>,
    /// The current target set; replaced whole and atomically by `set_route`.
    pub targets: Vec<Target>,
    /// How long a request to the upstream may take before a 504.
    pub upstream_timeout_ms: u64,
    /// How long a retired target keeps its in-flight requests and upgraded
    /// connections before they are closed.
    pub drain_timeout_ms: u64,
    /// An upgraded connection (WebSocket) with no byte either way for this
    /// long is closed. Default 5 min, at most 24 h. Absent from routes
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_idle_timeout_ms: Option<u64>,
    /// The largest request body sent on to the App; larger ones get a 413.
    /// Default 100 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Plain HTTP to these hosts is redirected to HTTPS while a certificate
    /// for the host is in force. Default on; `Some(false)` serves both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// Answers over HTTPS carry `Strict-Transport-Security: max-age=N`
    /// (unless the App sets its own). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts_max_age_secs: Option<u64>,
    /// Molt's own console (dashboard and API) rather than an App: Molt's
    /// cookies, stripped from every request to an App, pass to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub console: bool,
}

/// `Route::tunnel_idle_timeout_ms` when unset.
pub const DEFAULT_TUNNEL_IDLE_MS: u64 = 5 * 60 * 1000;
/// `Route::max_body_bytes` when unset.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 100 * 1024 * 1024;
/// The longest any route timeout is taken to be (24 h): a larger value
/// would overflow a deadline and means "practically never" anyway.
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    /// Creates or replaces an App's route; targets that leave the set start
    /// draining at once.
    SetRoute {
        route: Route,
    },
    RemoveRoute {
        app: String,
    },
    ListRoutes,
    /// Waits until the target `addr` (retired from `app`) has no request in
    /// flight and no upgraded connection, or `timeout_ms` passed; then closes
    /// what is left of it.
    WaitDrained {
        app: String,
        addr: String,
        timeout_ms: u64,
    },
    /// Holds the App's new requests (they are not sent upstream) until
    /// `resume`. A request held `max_pause_ms` gets a 503; with `max_queued`
    /// requests already held, further ones get a 503 at once. Pausing a
    /// paused route only changes the limits. `set_route` does not unpause:
    /// the usual recreate is pause, set_route to the new container, resume.
    ///
    /// Pause state lives in memory only: it is not written to `routes.json`,
    /// so a proxy that restarts serves unpaused (a pause nobody will resume
    /// must not outlive the process). It does survive a handover.
    Pause {
        app: String,
        max_pause_ms: u64,
        max_queued: usize,
    },
    /// Releases the App's held requests to whatever targets are current now.
    /// Resuming a route that is not paused, or unknown, is ok.
    Resume {
        app: String,
    },
    /// Sent by a new `molt proxy --takeover` for the same data dir: the
    /// answer carries the listening sockets (SCM_RIGHTS), the data dir's lock
    /// and the routes; the sender then answers `handover_done` on the same
    /// connection once it serves and owns the admin socket.
    Handover,
    /// The second half of `handover`, valid only on its connection.
    HandoverDone,
    /// Adds or replaces the HTTPS certificate of a domain (chosen by SNI).
    /// Kept in memory only: the server pushes its certificates again to a
    /// proxy that started afresh (see `list_certs`).
    PutCert {
        cert: TlsCert,
    },
    /// Forgets a domain's certificate; forgetting an unknown one is ok.
    RemoveCert {
        domain: String,
    },
    /// The domains that have a certificate now.
    ListCerts,
    /// ACME HTTP-01: answer `GET /.well-known/acme-challenge/TOKEN` on the
    /// HTTP listener, for any host, with `key_authorization`.
    SetHttp01 {
        token: String,
        key_authorization: String,
    },
    RemoveHttp01 {
        token: String,
    },
    /// ACME TLS-ALPN-01: show `cert` (its key included) to a client that
    /// offers only `acme-tls/1` for its domain.
    SetAlpn01 {
        cert: TlsCert,
    },
    RemoveAlpn01 {
        domain: String,
    },
}

/// A paused route's limits, as `list_routes` and `handover` report them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub app: String,
    pub max_pause_ms: u64,
    pub max_queued: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    /// For `ping`: the proxy's process id and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// For `wait_drained`: whether it drained before the timeout, and what
    /// was cut when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<u64>,
    /// For `ping`: identifies the proxy's binary (see `exe_id`), so the
    /// server can tell it was started from another build than its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe_id: Option<String>,
    /// For `list_routes` and `handover`: the routes that are paused now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Vec<Paused>>,
    /// For `handover`: what the descriptors passed with the answer are, in
    /// their order (`http`, `lock`, `metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fds: Option<Vec<String>>,
    /// For `ping`: the port the proxy serves HTTPS on, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_port: Option<u16>,
    /// For `list_certs`: the domains with a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<Vec<String>>,
    /// For `handover`: the certificates with their keys (they live in
    /// memory only, so they move with the sockets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certs: Option<Vec<TlsCert>>,
}

impl Response {
    /// A plain success.
    pub fn ok() -> Self {
        Response {
            ok: true,
            ..Response::default()
        }
    }

    /// A failure carrying the message the client will show.
    pub fn error(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(message.into()),
            ..Response::default()
        }
    }
}

/// Why an admin call failed. `path` is where the proxy was asked: its
/// socket, or a peer's `host:port`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the proxy at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the proxy at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the proxy at {path} did not answer within {} ms", .timeout.as_millis())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("unexpected answer from the proxy: {0}")]
    Protocol(String),
    /// The proxy understood the request and refused it; its own words.
    #[error("the proxy refused: {0}")]
    Refused(String),
}

/// What `ping` learns about the running proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingInfo {
    pub pid: u32,
    pub version: String,
    /// `None` from a proxy that predates in-place upgrades (it cannot hand
    /// its sockets over).
    pub exe_id: Option<String>,
}

/// How a `wait_drained` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOutcome {
    /// True when nothing was left in flight before the timeout.
    pub drained: bool,
    /// Requests and upgraded connections cut at the timeout.
    pub closed: u64,
}

/// Talks to a running proxy over its admin socket; the one client of the
/// protocol (the server, the tests and a proxy relaying after a handover
/// use it). Each call opens its own connection, so calls may run
/// concurrently (a long `wait_drained` does not hold up a `set_route`).
/// Lines are bounded by `MAX_LINE` both ways, as on the proxy's side.
#[derive(Debug, Clone)]
pub struct AdminClient {
    /// The socket path, or for a peer its `host:port` (for messages).
    socket: PathBuf,
    /// Set for a proxy reached over TCP: the token it wants, and TLS.
    tcp: Option<OverTcp>,
    /// How long an ordinary call may take.
    timeout: Duration,
}

/// What a client needs to reach a proxy over TCP.
#[derive(Clone)]
struct OverTcp {
    token: AdminToken,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for OverTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OverTcp { token: <redacted>, tls: TLS 1.3 }")
    }
}

/// How long an ordinary admin call may take; `wait_drained` adds its own wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

impl AdminClient {
    /// `path` is the data dir or the socket itself. Connects once to check a
    /// proxy is there.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, AdminError> {
        let path = path.as_ref();
        let socket = if path.is_dir() {
            path.join(SOCKET_FILE)
        } else {
            path.to_path_buf()
        };
        UnixStream::connect(&socket)
            .await
            .map_err(|source| AdminError::Connect {
                path: socket.clone(),
                source,
            })?;
        Ok(AdminClient::at(socket))
    }

    /// A client for the socket at `socket`, without checking that anything
    /// listens there yet.
    pub fn at(socket: impl Into<PathBuf>) -> Self {
        AdminClient {
            socket: socket.into(),
            tcp: None,
            timeout: CALL_TIMEOUT,
        }
    }

    /// A client for a proxy on another machine that serves the admin
    /// protocol at `addr` (`host:port`, see `molt proxy --admin-listen`):
    /// over TLS pinned to the token's key (see `admin_tls`), every
    /// connection then offering `token`.
    pub fn tcp(addr: &str, token: AdminToken) -> Result<Self, AdminError> {
        let tls = crate::admin_tls::connector(&token)
            .map_err(|e| AdminError::Protocol(format!("{e:#}")))?;
        Ok(AdminClient {
            socket: PathBuf::from(addr),
            tcp: Some(OverTcp { token, tls }),
            timeout: CALL_TIMEOUT,
        })
    }

    /// The same client with another bound on ordinary calls (`wait_drained`
    /// adds its own wait to it).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        AdminClient { timeout, ..self }
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    pub async fn ping(&self) -> Result<PingInfo, AdminError> {
        let resp = self.call(&Request::Ping, self.timeout).await?;
        match (resp.pid, resp.version) {
            (Some(pid), Some(version)) => Ok(PingInfo {
                pid,
                version,
                exe_id: resp.exe_id,
            }),
            _ => Err(AdminError::Protocol(
                "ping answer without pid or version".into(),
            )),
        }
    }

    pub async fn set_route(&self, route: Route) -> Result<(), AdminError> {
        self.call(&Request::SetRoute { route }, self.timeout)
            .await?;
        Ok(())
    }

    pub async fn remove_route(&self, app: &str) -> Result<(), AdminError> {
        let req = Request::RemoveRoute {
            app: app.to_string(),
        };
        self.call(&req, self.timeout).await?;
        Ok(())
    }

    pub async fn list_routes(&self) -> Result<Vec<Route>, AdminError> {
        let resp = self.call(&Request::ListRoutes, self.timeout).await?;
        Ok(resp.routes.unwrap_or_default())
    }

    /// Holds `app`'s new requests until `resume` (see `Request::Pause`).
    pub async fn pause(
        &self,
        app: &str,
        max_pause: Duration,
        max_queued: usize,
    ) -> Result<(), AdminError> {
        let req = Request::Pause {
            app: app.to_string(),
            max_pause_ms: u64::try_from(max_pause.as_millis()).unwrap_or(u64::MAX),
            max_queued,
        };
        self.call(&req, self.timeout).await?;
        Ok(())
    }

    /// Releases `app`'s held requests to its current targets.
    pub async fn resume(&self, app: &str) -> Result<(), AdminError> {
        let req = Request::Resume {
            app: app.to_string(),
        };
        self.call(&req, self.timeout).await?;
        Ok(())
    }

    /// The routes that are paused now, with their limits.
    pub async fn paused(&self) -> Result<Vec<Paused>, AdminError> {
        let resp = self.call(&Request::ListRoutes, self.timeout).await?;
        Ok(resp.paused.unwrap_or_default())
    }

    /// Puts a domain's certificate in force (see `Request::PutCert`).
    pub async fn put_cert(&self, cert: TlsCert) -> Result<(), AdminError> {
        self.call(&Request::PutCert { cert }, self.timeout).await?;
        Ok(())
    }

    pub async fn remove_cert(&self, domain: &str) -> Result<(), AdminError> {
        let req = Request::RemoveCert {
            domain: domain.to_string(),
        };
        self.call(&req, self.timeout).await?;
        Ok(())
    }

    /// The domains that have a certificate in the proxy now.
    pub async fn list_certs(&self) -> Result<Vec<String>, AdminError> {
        let resp = self.call(&Request::ListCerts, self.timeout).await?;
        Ok(resp.domains.unwrap_or_default())
    }

    /// Starts answering an ACME HTTP-01 token (see `Request::SetHttp01`).
    pub async fn set_http01(&self, token: &str, key_authorization: &str) -> Result<(), AdminError> {
        let req = Request::SetHttp01 {
            token: token.to_string(),
            key_authorization: key_authorization.to_string(),
        };
        self.call(&req, self.timeout).await?;
        Ok(())
    }

    pub async fn remove_http01(&self, token: &str) -> Result<(), AdminError> {
        let req = Request::RemoveHttp01 {
            token: token.to_string(),
        };
        self.call(&req, self.timeout).await?;
        Ok(())
    }

    /// Starts showing a TLS-ALPN-01 challenge certificate.
    pub async fn set_alpn01(&self, cert: TlsCert) -> Result<(), AdminError> {
        self.call(&Request::SetAlpn01 { cert }, self.timeout)
            .await?;
        Ok(())
    }

    pub async fn remove_alpn01(&self, domain: &str) -> Result<(), AdminError> {
        let req = Request::RemoveAlpn01 {
            domain: domain.to_string(),
        };
        self.call(&req, self.timeout).await?;
        Ok(())
    }

    /// Waits until the retired target `addr` of `app` has drained, or closes
    /// what remains of it after `timeout`.
    pub async fn wait_drained(
        &self,
        app: &str,
        addr: &str,
        timeout: Duration,
    ) -> Result<DrainOutcome, AdminError> {
        let req = Request::WaitDrained {
            app: app.to_string(),
            addr: addr.to_string(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let resp = self.call(&req, timeout + self.timeout).await?;
        Ok(DrainOutcome {
            drained: resp.drained.unwrap_or(true),
            closed: resp.closed.unwrap_or(0),
        })
    }

    /// Sends one request line, reads one response line; `ok: false` becomes
    /// `AdminError::Refused` with the proxy's message.
    pub async fn call(&self, req: &Request, timeout: Duration) -> Result<Response, AdminError> {
        let connect_err = |source| AdminError::Connect {
            path: self.socket.clone(),
            source,
        };
        let exchange = async {
            let mut line =
                serde_json::to_vec(req).map_err(|e| AdminError::Protocol(e.to_string()))?;
            line.push(b'\n');
            if line.len() > MAX_LINE {
                return Err(AdminError::Protocol(format!(
                    "the request is {} bytes long, over the admin protocol's {MAX_LINE}",
                    line.len()
                )));
            }
            match &self.tcp {
                None => {
                    let stream = UnixStream::connect(&self.socket)
                        .await
                        .map_err(connect_err)?;
                    self.exchange(stream, &line).await
                }
                Some(OverTcp { token, tls }) => {
                    let addr = self.socket.to_string_lossy();
                    let stream = TcpStream::connect(addr.as_ref())
                        .await
                        .map_err(connect_err)?;
                    let _ = stream.set_nodelay(true);
                    let stream = tls
                        .connect(crate::admin_tls::server_name(), stream)
                        .await
                        .map_err(|e| AdminError::Io {
                            path: self.socket.clone(),
                            source: std::io::Error::other(format!(
                                "TLS with the proxy failed ({e}): does it have the same admin token?"
                            )),
                        })?;
                    // The token line and the request go in one write: one
                    // round trip. A wrong token is answered with a refusal
                    // in place of the request's answer.
                    let auth = AuthLine {
                        auth: token.expose().to_string(),
                    };
                    let mut both = serde_json::to_vec(&auth)
                        .map_err(|e| AdminError::Protocol(e.to_string()))?;
                    both.push(b'\n');
                    both.extend_from_slice(&line);
                    self.exchange(stream, &both).await
                }
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(AdminError::Timeout {
                path: self.socket.clone(),
                timeout,
            }),
        }
    }

    /// Writes `lines`, reads the one answer line.
    async fn exchange<S>(&self, stream: S, lines: &[u8]) -> Result<Response, AdminError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let io_err = |source| AdminError::Io {
            path: self.socket.clone(),
            source,
        };
        let (read, mut write) = tokio::io::split(stream);
        write.write_all(lines).await.map_err(io_err)?;
        let mut answer = Vec::new();
        let mut reader = BufReader::new(read);
        read_line(&mut reader, &mut answer)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => AdminError::Protocol(format!(
                    "the proxy's answer is over the admin protocol's {MAX_LINE} bytes"
                )),
                _ => io_err(e),
            })?;
        if answer.is_empty() {
            return Err(AdminError::Protocol(
                "the proxy closed the connection".into(),
            ));
        }
        let resp: Response =
            serde_json::from_slice(&answer).map_err(|e| AdminError::Protocol(e.to_string()))?;
        if resp.ok {
            Ok(resp)
        } else {
            Err(AdminError::Refused(
                resp.error.unwrap_or_else(|| "no reason given".into()),
            ))
        }
    }
}

/// Reads one `\n`-terminated line (without the `\n`) of at most `MAX_LINE`
/// bytes into `buf`; an empty `buf` means the peer closed the connection.
/// A longer line is an `InvalidData` error (and nothing else is).
pub(crate) async fn read_line<R>(reader: &mut R, buf: &mut Vec<u8>) -> std::io::Result<()>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    buf.clear();
    let limit = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
    let read = (&mut *reader).take(limit).read_until(b'\n', buf).await?;
    if read > MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "admin line too long",
        ));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake proxy that answers every connection's first line with `answer`.
    fn fake_proxy(socket: &Path, answer: Vec<u8>) -> tokio::task::JoinHandle<()> {
        let listener = UnixListener::bind(socket).expect("bind");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (read, mut write) = stream.into_split();
                let mut line = Vec::new();
                let _ = read_line(&mut BufReader::new(read), &mut line).await;
                let _ = write.write_all(&answer).await;
            }
        })
    }

    #[tokio::test]
    async fn the_client_refuses_an_over_long_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join(SOCKET_FILE);
        let mut answer = br#"{"ok":true,"error":""#.to_vec();
        answer.resize(MAX_LINE + 10, b'x');
        answer.extend(b"\"}\n");
        let fake = fake_proxy(&socket, answer);
        let err = AdminClient::at(&socket)
            .list_routes()
            .await
            .expect_err("over-long answer");
        assert!(
            matches!(&err, AdminError::Protocol(m) if m.contains(&MAX_LINE.to_string())),
            "{err}"
        );
        fake.abort();
    }

    #[tokio::test]
    async fn the_client_does_not_send_an_over_long_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join(SOCKET_FILE);
        let fake = fake_proxy(&socket, b"{\"ok\":true}\n".to_vec());
        let client = AdminClient::at(&socket).with_timeout(Duration::from_secs(5));
        let err = client
            .remove_route(&"x".repeat(MAX_LINE))
            .await
            .expect_err("over-long request");
        assert!(
            matches!(&err, AdminError::Protocol(m) if m.contains(&MAX_LINE.to_string())),
            "{err}"
        );
        client.remove_route("x").await.expect("a short one goes");
        fake.abort();
    }

    /// A client that completes TLS (as anyone can who does not check the
    /// proxy's key) but offers another token gets one refusal.
    #[tokio::test]
    async fn over_tcp_a_wrong_token_line_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let right = AdminToken::new(&"r".repeat(40)).expect("token");
        let proxy = crate::Proxy::start(crate::ProxyConfig {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            https: None,
            metrics: None,
            takeover: false,
            edge: crate::EdgeConfig::default(),
            admin_listen: Some(("127.0.0.1:0".parse().expect("addr"), right.clone())),
        })
        .await
        .expect("proxy");
        let addr = proxy.admin_addr().expect("admin").to_string();
        let wrong = AdminClient {
            socket: PathBuf::from(&addr),
            tcp: Some(OverTcp {
                token: AdminToken::new(&"w".repeat(40)).expect("token"),
                tls: crate::admin_tls::connector(&right).expect("tls"),
            }),
            timeout: CALL_TIMEOUT,
        };
        let err = wrong.list_routes().await.expect_err("wrong token line");
        assert!(
            matches!(&err, AdminError::Refused(m) if m.contains("token is missing or wrong")),
            "{err}"
        );
        AdminClient::tcp(&addr, right)
            .expect("client")
            .ping()
            .await
            .expect("the right one is answered");
        proxy.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn a_silent_proxy_is_a_timeout_in_milliseconds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join(SOCKET_FILE);
        let _listener = UnixListener::bind(&socket).expect("bind");
        let err = AdminClient::at(&socket)
            .with_timeout(Duration::from_millis(100))
            .ping()
            .await
            .expect_err("no answer");
        assert!(matches!(err, AdminError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("within 100 ms"), "{err}");
    }
}
