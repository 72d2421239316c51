//! Health probes: an HTTP `GET` that must answer 2xx; without a health
//! path, the image's own `HEALTHCHECK` as the engine runs it; without
//! either, a TCP connect.

use std::fmt;
use std::time::Duration;
use tokio::net::TcpStream;

/// What one check found, each with the sentence users read. The kind of an
/// unhealthy result is decided here, where it is seen, so a failed deploy
/// can say "wrong port" without reading the sentence back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Healthy(String),
    /// Something answered, but not with 2xx.
    Answered(String),
    /// Nothing listens on the port (refused, or closed at once).
    Refused(String),
    /// No answer in time, or another failure.
    Unhealthy(String),
}

impl Probe {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Probe::Healthy(_))
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Healthy(s) | Probe::Answered(s) | Probe::Refused(s) | Probe::Unhealthy(s) => {
                f.write_str(s)
            }
        }
    }
}

/// The image's own `HEALTHCHECK` as the engine runs it in one container:
/// what it runs and what it last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineHealth {
    pub status: EngineHealthStatus,
    /// The check's command as the image declares it, e.g.
    /// `/app check /healthz (every 5 s)`.
    pub command: String,
    /// What the last check that ran printed (trimmed, bounded).
    pub last_output: Option<String>,
}

/// The engine's verdict on a container with a `HEALTHCHECK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineHealthStatus {
    /// No verdict yet: the check has not passed, nor failed its retries.
    Starting,
    Healthy,
    /// The check failed its retries in a row.
    Unhealthy,
}

impl EngineHealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

impl EngineHealth {
    /// The verdict as a probe: `Answered` when unhealthy, so that a failing
    /// image check reads like a failing health path (something runs, and
    /// says it is not well).
    pub fn probe(&self) -> Probe {
        let said = match self.last_output.as_deref() {
            Some(out) if !out.is_empty() => format!("; its last output: {out}"),
            _ => String::new(),
        };
        match self.status {
            EngineHealthStatus::Healthy => Probe::Healthy(format!(
                "the image's HEALTHCHECK ({}) reports healthy",
                self.command
            )),
            EngineHealthStatus::Unhealthy => Probe::Answered(format!(
                "the image's HEALTHCHECK ({}) reports unhealthy{said}",
                self.command
            )),
            EngineHealthStatus::Starting => Probe::Unhealthy(format!(
                "the image's HEALTHCHECK ({}) has not passed yet{said}",
                self.command
            )),
        }
    }
}

/// How much of a check's output is kept: enough for the reason, never a
/// flood.
const OUTPUT_LIMIT: usize = 1000;

/// The last output of an image's check, trimmed and bounded.
pub fn check_output(output: &str) -> Option<String> {
    let trimmed = output.trim();
    if trimmed.is_empty() {
        return None;
    }
    let mut shown: String = trimmed.chars().take(OUTPUT_LIMIT).collect();
    if shown.len() < trimmed.len() {
        shown.push('…');
    }
    Some(shown)
}

/// An image's `HEALTHCHECK` (the engine's `Test` array and interval in
/// nanoseconds) as a phrase; `None` when the image declares none or
/// disables it (`NONE`).
pub fn describe_healthcheck(test: &[String], interval_ns: Option<i64>) -> Option<String> {
    let command = match test.split_first()? {
        (kind, _) if kind == "NONE" => return None,
        (kind, args) if kind == "CMD" && !args.is_empty() => args.join(" "),
        (kind, [line]) if kind == "CMD-SHELL" => line.clone(),
        _ => return None,
    };
    let every = match interval_ns.filter(|ns| *ns > 0) {
        Some(ns) => Duration::from_nanos(ns as u64),
        // The engine's default.
        None => Duration::from_secs(30),
    };
    let every = if every.subsec_millis() == 0 {
        format!("{} s", every.as_secs())
    } else {
        format!("{} ms", every.as_millis())
    };
    Some(format!("`{command}` every {every}"))
}

/// Probes share one client; it opens a fresh connection per check so a
/// stale keep-alive socket never hides a dead server.
#[derive(Clone)]
pub struct Prober {
    client: reqwest::Client,
    /// How long a TCP check keeps its connection open to see whether it is
    /// closed at once. A published port is answered by the engine's port
    /// proxy, which accepts even when nothing listens in the container and
    /// then closes; on the bridge a connect alone says enough (zero).
    tcp_settle: Duration,
}

/// `Prober::tcp_settle` for containers reached at a published port: the
/// engine's port proxy closes within a millisecond or two when nothing
/// listens behind it.
pub const PUBLISHED_TCP_SETTLE: Duration = Duration::from_millis(50);

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

impl Prober {
    pub fn new() -> Self {
        crate::tls::init();
        // `no_proxy`: a probe goes straight to the container; an
        // `HTTP_PROXY` in the server's environment would send it elsewhere
        // (and tell that host every container's address).
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            client,
            tcp_settle: Duration::ZERO,
        }
    }

    /// This prober, keeping TCP checks' connections open for `settle` to
    /// see them closed (see `tcp_settle`).
    pub fn with_tcp_settle(mut self, settle: Duration) -> Self {
        self.tcp_settle = settle;
        self
    }

    pub async fn check(&self, addr: &str, path: Option<&str>, timeout: Duration) -> Probe {
        match path {
            Some(path) => self.http(addr, path, timeout).await,
            None => tcp(addr, timeout, self.tcp_settle).await,
        }
    }

    async fn http(&self, addr: &str, path: &str, timeout: Duration) -> Probe {
        let url = format!("http://{addr}{path}");
        let result = self.client.get(&url).timeout(timeout).send().await;
        match result {
            Ok(resp) => {
                let status = resp.status();
                let shown = format!("GET {path} answered {}", status.as_u16());
                if status.is_success() {
                    Probe::Healthy(shown)
                } else {
                    let body = read_bounded(resp, BODY_LIMIT).await;
                    let body = String::from_utf8_lossy(&body);
                    let excerpt: String = body.trim().chars().take(200).collect();
                    if excerpt.is_empty() {
                        Probe::Answered(shown)
                    } else {
                        Probe::Answered(format!("{shown}: {excerpt}"))
                    }
                }
            }
            Err(e) if e.is_timeout() => Probe::Unhealthy(format!(
                "GET {path} did not answer within {} ms",
                timeout.as_millis()
            )),
            Err(e) if refused(&e) => {
                Probe::Refused(format!("GET {path} failed: {}", connect_reason(&e)))
            }
            Err(e) => Probe::Unhealthy(format!("GET {path} failed: {}", connect_reason(&e))),
        }
    }
}

/// How much of an unhealthy answer's body a probe reads (for the excerpt
/// it shows): an App that answers with an endless or huge body cannot make
/// the server hold it in memory or wait for its end.
pub const BODY_LIMIT: usize = 4 * 1024;

/// At most `limit` bytes of a response body: what arrived before an error or
/// the request's timeout counts.
async fn read_bounded(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

async fn tcp(addr: &str, timeout: Duration, settle: Duration) -> Probe {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) if !settle.is_zero() && closed_at_once(&stream, settle).await => {
            Probe::Refused(format!(
                "TCP connection to port {} was closed at once: nothing listens behind it",
                port_of(addr)
            ))
        }
        Ok(Ok(_)) => Probe::Healthy(format!("TCP connect to port {} succeeded", port_of(addr))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Probe::Refused(format!("TCP connect to port {} failed: {e}", port_of(addr)))
        }
        Ok(Err(e)) => {
            Probe::Unhealthy(format!("TCP connect to port {} failed: {e}", port_of(addr)))
        }
        Err(_) => Probe::Unhealthy(format!(
            "TCP connect to port {} timed out after {} ms",
            port_of(addr),
            timeout.as_millis()
        )),
    }
}

/// Whether the peer closes (or resets) the connection within `settle`; a
/// peer that stays open or speaks first is listening.
async fn closed_at_once(stream: &TcpStream, settle: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(settle, stream.peek(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}

/// Whether a request failed because nothing listens: an I/O error of kind
/// `ConnectionRefused` somewhere in its chain of causes.
fn refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// The innermost cause of a request error ("Connection refused"), which is
/// what a user needs to see.
fn connect_reason(e: &reqwest::Error) -> String {
    if refused(e) {
        // The OS's own words ("Connection refused (os error 111)") would
        // only say it again.
        return "connection refused: is the App listening on the configured port?".to_string();
    }
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_said_once() {
        // A port nothing listens on: bound, then let go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let e = Prober::new()
            .client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .expect_err("nothing listens");
        assert_eq!(
            connect_reason(&e),
            "connection refused: is the App listening on the configured port?"
        );
    }

    #[test]
    fn image_healthchecks_are_described() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            describe_healthcheck(&v(&["CMD", "/app", "check"]), Some(1_000_000_000)).as_deref(),
            Some("`/app check` every 1 s")
        );
        assert_eq!(
            describe_healthcheck(&v(&["CMD-SHELL", "curl -f localhost"]), None).as_deref(),
            Some("`curl -f localhost` every 30 s")
        );
        assert_eq!(
            describe_healthcheck(&v(&["CMD", "x"]), Some(500_000_000)).as_deref(),
            Some("`x` every 500 ms")
        );
        assert_eq!(describe_healthcheck(&v(&["NONE"]), None), None);
        assert_eq!(describe_healthcheck(&[], None), None);
        assert_eq!(describe_healthcheck(&v(&["CMD"]), None), None);
    }

    #[test]
    fn engine_verdicts_are_probes() {
        let mut h = EngineHealth {
            status: EngineHealthStatus::Starting,
            command: "`/app check` every 1 s".into(),
            last_output: check_output("  GET /healthz answered 500\n"),
        };
        assert!(matches!(h.probe(), Probe::Unhealthy(_)));
        h.status = EngineHealthStatus::Unhealthy;
        let p = h.probe();
        assert!(matches!(p, Probe::Answered(_)), "{p:?}");
        assert!(
            p.to_string()
                .ends_with("its last output: GET /healthz answered 500"),
            "{p}"
        );
        h.status = EngineHealthStatus::Healthy;
        assert!(h.probe().is_healthy());
        let long = "x".repeat(5000);
        assert_eq!(
            check_output(&long).unwrap().chars().count(),
            OUTPUT_LIMIT + 1
        );
        assert_eq!(check_output(" \n"), None);
    }

    #[tokio::test]
    async fn tcp_probe_sees_listener_and_refusal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let p = Prober::new()
            .check(&addr, None, Duration::from_secs(1))
            .await;
        assert!(p.is_healthy(), "{p}");
        drop(listener);
        let p = Prober::new()
            .check(&addr, None, Duration::from_secs(1))
            .await;
        assert!(!p.is_healthy(), "{p}");
        let p = Prober::new()
            .check(&addr, Some("/healthz"), Duration::from_secs(1))
            .await;
        assert!(p.to_string().contains("refused"), "{p}");
        assert!(matches!(p, Probe::Refused(_)), "{p:?}");
    }

    /// An unhealthy answer whose body never ends: the probe reads a few
    /// KiB for its excerpt and returns, long before its timeout.
    #[tokio::test]
    async fn http_probe_reads_a_bounded_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            conn.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 1073741824\r\n\r\n",
            )
            .await
            .unwrap();
            // 64 KiB of body, then silence with the connection open.
            conn.write_all(&[b'x'; 64 * 1024]).await.unwrap();
            std::future::pending::<()>().await;
        });
        let started = std::time::Instant::now();
        let p = Prober::new()
            .check(&addr, Some("/healthz"), Duration::from_secs(20))
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the probe waited for the body's end: {:?}",
            started.elapsed()
        );
        assert!(matches!(p, Probe::Answered(_)), "{p:?}");
        assert!(p.to_string().contains("answered 500: xxx"), "{p}");
        server.abort();
    }

    /// Behind a published port the engine's proxy accepts and then closes
    /// when nothing listens: with a settle time that is unhealthy, while a
    /// listener that keeps the connection open is healthy.
    #[tokio::test]
    async fn tcp_probe_with_settle_sees_an_accept_then_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let closer = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            drop(conn);
            listener
        });
        let prober = Prober::new().with_tcp_settle(PUBLISHED_TCP_SETTLE);
        let p = prober.check(&addr, None, Duration::from_secs(1)).await;
        assert!(p.to_string().contains("closed at once"), "{p}");

        let listener = closer.await.unwrap();
        let keeper = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(conn);
        });
        let p = prober.check(&addr, None, Duration::from_secs(1)).await;
        assert!(p.is_healthy(), "{p}");
        keeper.abort();
    }
}
