//! Health probes: an HTTP `GET` that must answer 2xx, or a TCP connect when
//! the App has no health path.

use std::fmt;
use std::time::Duration;
use tokio::net::TcpStream;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Healthy(String),
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
            Probe::Healthy(s) | Probe::Unhealthy(s) => f.write_str(s),
        }
    }
}

/// Probes share one client; it opens a fresh connection per check so a
/// stale keep-alive socket never hides a dead server.
#[derive(Clone)]
pub struct Prober {
    client: reqwest::Client,
}

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

impl Prober {
    pub fn new() -> Self {
        crate::tls::init();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { client }
    }

    pub async fn check(&self, addr: &str, path: Option<&str>, timeout: Duration) -> Probe {
        match path {
            Some(path) => self.http(addr, path, timeout).await,
            None => tcp(addr, timeout).await,
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
                    let body = resp.text().await.unwrap_or_default();
                    let excerpt: String = body.trim().chars().take(200).collect();
                    if excerpt.is_empty() {
                        Probe::Unhealthy(shown)
                    } else {
                        Probe::Unhealthy(format!("{shown}: {excerpt}"))
                    }
                }
            }
            Err(e) if e.is_timeout() => Probe::Unhealthy(format!(
                "GET {path} did not answer within {} ms",
                timeout.as_millis()
            )),
            Err(e) => Probe::Unhealthy(format!("GET {path} failed: {}", connect_reason(&e))),
        }
    }
}

async fn tcp(addr: &str, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probe::Healthy(format!("TCP connect to port {} succeeded", port_of(addr))),
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

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}

/// The innermost cause of a request error ("Connection refused"), which is
/// what a user needs to see.
fn connect_reason(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    if last.contains("refused") {
        format!("connection refused ({last}): is the App listening on the configured port?")
    } else {
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
