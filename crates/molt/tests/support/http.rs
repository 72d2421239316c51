//! HTTP clients for tests: reqwest for ordinary requests through the proxy,
//! and a tiny blocking HTTP/1.1, WebSocket and SSE client over `std::net` for
//! cases where the exact bytes matter or no runtime is at hand.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A reqwest client for plain HTTP to 127.0.0.1: no system proxy (an
/// `HTTP_PROXY` in the environment must not capture test traffic), HTTP/1.1,
/// no redirects followed.
pub fn proxy_client(timeout: Duration) -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: without a TLS config of our
    // own it would want a process-wide crypto provider and the system's CA
    // certificates (absent on a minimal CI machine) even for plain HTTP.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports the default TLS versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .http1_only()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building a reqwest client for plain HTTP failed")
}

/// GET `path` from the proxy at `proxy` with `Host: host`; returns the status
/// and body. Each call uses a fresh connection, so each request is routed on
/// its own. Bounded to 30 s.
pub async fn get(proxy: SocketAddr, host: &str, path: &str) -> anyhow::Result<(u16, String)> {
    get_with_timeout(proxy, host, path, Duration::from_secs(30)).await
}

/// [`get`] with a chosen bound.
pub async fn get_with_timeout(
    proxy: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let url = format!("http://{proxy}{path}");
    let resp = proxy_client(timeout)
        .get(&url)
        .header(reqwest::header::HOST, host)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GET {url} (Host: {host}) failed: {e:#}"))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| {
        anyhow::anyhow!("reading the body of GET {url} (Host: {host}) failed: {e:#}")
    })?;
    Ok((status, body))
}

/// What the proxy serves at `/` for `host`, as one string to compare: the
/// trimmed body of a 200, else `HTTP STATUS: body` or `error: …`.
pub async fn served(proxy: SocketAddr, host: &str) -> String {
    match get(proxy, host, "/").await {
        Ok((200, body)) => body.trim().to_string(),
        Ok((status, body)) => format!("HTTP {status}: {body}"),
        Err(e) => format!("error: {e}"),
    }
}

/// A response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First value of a header, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` on `addr` with `Host: addr`, bounded to 10 s.
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<HttpResponse> {
    http_request(
        addr,
        "GET",
        &addr.to_string(),
        path,
        &[],
        &[],
        Duration::from_secs(10),
    )
}

/// One blocking HTTP/1.1 request on a new connection (`Connection: close`),
/// with exact control over `Host` and headers. Handles Content-Length,
/// chunked and close-delimited bodies. `timeout` bounds connect, each read and
/// the whole exchange.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let deadline = Instant::now() + timeout;
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut writer = stream.try_clone()?;
    writer.write_all(head.as_bytes())?;
    writer.write_all(body)?;
    writer.flush()?;

    let mut reader = BufReader::new(stream);
    let (status, resp_headers) = read_head(&mut reader)?;
    let mut resp = HttpResponse {
        status,
        headers: resp_headers,
        body: Vec::new(),
    };
    let no_body =
        method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    if no_body {
        return Ok(resp);
    }
    let too_slow = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{method} {path} on {addr}: no full response within {timeout:?}"),
        )
    };
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        // Bounded by the chunk count as well as by the deadline.
        for _ in 0..1_000_000 {
            if Instant::now() > deadline {
                return Err(too_slow());
            }
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let size_hex = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size line {line:?}"),
                )
            })?;
            if size == 0 {
                break;
            }
            let start = resp.body.len();
            resp.body.resize(start + size, 0);
            reader.read_exact(&mut resp.body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad Content-Length {len:?}"),
            )
        })?;
        resp.body.resize(len, 0);
        reader.read_exact(&mut resp.body)?;
    } else {
        reader.read_to_end(&mut resp.body)?;
    }
    if Instant::now() > deadline {
        return Err(too_slow());
    }
    Ok(resp)
}

/// Reads a status line and headers, leaving the reader at the body.
fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| bad(format!("malformed status line {line:?}")))?;
    let mut headers = Vec::new();
    for _ in 0..200 {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the response head".into()));
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok((status, headers));
        }
        let (n, v) = l
            .split_once(':')
            .ok_or_else(|| bad(format!("malformed header line {l:?}")))?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    Err(bad("more than 200 response headers".into()))
}

/// Reads a server-sent-events response from `GET path` (with `Host: host`)
/// and returns the `data:` payload of each event, in order. Bounded by
/// `timeout` overall.
pub fn sse_events(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> io::Result<Vec<String>> {
    let resp = http_request(
        addr,
        "GET",
        host,
        path,
        &[("Accept", "text/event-stream")],
        &[],
        timeout,
    )?;
    if resp.status != 200 {
        return Err(io::Error::other(format!(
            "GET {path}: status {} body {:?}",
            resp.status,
            resp.text()
        )));
    }
    Ok(resp
        .text()
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect())
}

/// `Authorization` header value for HTTP basic auth.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

/// A received WebSocket frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsMessage {
    /// 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl WsMessage {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A minimal blocking WebSocket client (RFC 6455), enough to check that the
/// proxy upgrades connections and keeps them open.
pub struct WsClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The headers of the 101 response (e.g. `X-Testapp-Version`).
    pub response_headers: Vec<(String, String)>,
}

/// The RFC 6455 example key and its accept value: a fixed key lets the client
/// check the handshake without its own SHA-1.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

impl WsClient {
    /// Opens `ws://addr/path` with `Host: host`. Every later read is bounded
    /// by `timeout`.
    pub fn connect(
        addr: SocketAddr,
        host: &str,
        path: &str,
        timeout: Duration,
    ) -> io::Result<WsClient> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut writer = stream.try_clone()?;
        write!(
            writer,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )?;
        writer.flush()?;
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader)?;
        let accept = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|(_, v)| v.as_str());
        if status != 101 || accept != Some(WS_ACCEPT) {
            return Err(io::Error::other(format!(
                "WebSocket handshake on {addr}{path} (Host: {host}) failed: status {status}, Sec-WebSocket-Accept {accept:?}"
            )));
        }
        Ok(WsClient {
            reader,
            writer,
            response_headers: headers,
        })
    }

    /// Sends one final frame; client frames must be masked.
    pub fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mask = [0x5a, 0x17, 0xc3, 0x8e];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.writer.write_all(&frame)?;
        self.writer.flush()
    }

    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(1, text.as_bytes())
    }

    /// Reads one frame (unfragmented messages only, which is all tests send).
    pub fn recv(&mut self) -> io::Result<WsMessage> {
        let mut h = [0u8; 2];
        self.reader.read_exact(&mut h)?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.reader.read_exact(&mut b)?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.reader.read_exact(&mut b)?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        if len > 64 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("WebSocket frame of {len} bytes"),
            ));
        }
        let mut mask = None;
        if h[1] & 0x80 != 0 {
            let mut m = [0u8; 4];
            self.reader.read_exact(&mut m)?;
            mask = Some(m);
        }
        let mut payload = vec![0u8; len as usize];
        self.reader.read_exact(&mut payload)?;
        if let Some(m) = mask {
            payload
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b ^= m[i % 4]);
        }
        Ok(WsMessage {
            opcode: h[0] & 0x0f,
            payload,
        })
    }

    /// Sends `text` and returns the text of the next frame.
    pub fn echo(&mut self, text: &str) -> io::Result<String> {
        self.send_text(text)?;
        Ok(self.recv()?.text())
    }

    /// Sends a close frame with `code` and returns the peer's close frame.
    pub fn close(mut self, code: u16) -> io::Result<WsMessage> {
        self.send(8, &code.to_be_bytes())?;
        self.recv()
    }
}
