//! A one-shot HTTP/1.1 client for control traffic (Molt's API, the Docker
//! engine's API, readiness checks): one connection per request, every step
//! bounded. The load generator has its own loop in `load.rs`; this one favours
//! simplicity over speed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// What a request returned.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "unexpected JSON (status {}): {}",
                self.status,
                self.text().chars().take(500).collect::<String>()
            )
        })
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint<'a> {
    Tcp(SocketAddr),
    Unix(&'a Path),
}

/// One request on a fresh connection. `host` is the `Host` header; `headers`
/// are added as given; `body` (JSON usually) is sent with `Content-Length`.
pub async fn request(
    endpoint: Endpoint<'_>,
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Reply> {
    let what = format!("{method} {path} on {endpoint:?}");
    let fut = async {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                send(stream, method, host, path, headers, body).await
            }
            Endpoint::Unix(p) => {
                let stream = tokio::net::UnixStream::connect(p).await?;
                send(stream, method, host, path, headers, body).await
            }
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {timeout:?}"))?
        .with_context(|| what.clone())
}

async fn send<S>(
    stream: S,
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Reply>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    driver.abort();
    Ok(Reply {
        status,
        headers: parts.headers,
        body,
    })
}

/// `GET path` with `Host: host` on `addr`; the reply, or an error for a
/// connection failure.
pub async fn get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Result<Reply> {
    request(
        Endpoint::Tcp(addr),
        Method::GET,
        host,
        path,
        &[],
        None,
        timeout,
    )
    .await
}
