//! What stands between the internet and the request path: the connection
//! limit, the deadline on a connection's first bytes (PROXY protocol header
//! and the HTTP/1-or-2 sniff), trusted proxies, and the idle clocks of
//! HTTP/2 connections and upgraded tunnels.
//!
//! Everything here runs once per connection (or per read of a tunnel),
//! never per request, and allocates nothing on the request path.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Connections served at once by default. Each proxied connection may hold
/// an upstream connection too, so the proxy needs about twice this in file
/// descriptors; it raises its limit at start and lowers this if it cannot.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// How a proxy faces its clients. `Default` is what `molt proxy` uses
/// unless told otherwise; tests shorten the clocks.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// A new connection must send its PROXY header (if any) and enough bytes
    /// to tell HTTP/1 from HTTP/2 within this.
    pub first_bytes_timeout: Duration,
    /// Every HTTP/1 request head (the first and each keep-alive one) must
    /// arrive within this.
    pub header_read_timeout: Duration,
    /// An HTTP/2 connection that starts no request for this long is closed
    /// (GOAWAY: streams still open finish first).
    pub h2_idle_timeout: Duration,
    /// HTTP/2 keep-alive pings: interval, and how long an answer may take.
    pub h2_keep_alive: Duration,
    /// Streams one HTTP/2 connection may have open at once.
    pub h2_max_streams: u32,
    /// The largest request head (HTTP/1 buffer, HTTP/2 header list); larger
    /// ones get a 431.
    pub max_header_bytes: usize,
    /// Peers whose `X-Forwarded-*`, `Forwarded` and `X-Real-IP` are believed
    /// (and, with `proxy_protocol`, who may send a PROXY header).
    pub trusted_proxies: Vec<Cidr>,
    /// Expect a PROXY protocol v2 header on every connection (a load
    /// balancer in front); only from trusted peers.
    pub proxy_protocol: bool,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            first_bytes_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            h2_idle_timeout: Duration::from_secs(120),
            h2_keep_alive: Duration::from_secs(20),
            h2_max_streams: 256,
            max_header_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
        }
    }
}

impl EdgeConfig {
    /// Whether headers (and PROXY headers) from `ip` are believed.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// An address block, `10.0.0.0/8` or `::1/128`; a bare address is one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let bad = || format!("`{raw}` is not an address block like 10.0.0.0/8 or ::1/128");
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let net = canonical(addr.trim().parse::<IpAddr>().map_err(|_| bad())?);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { net, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// Raises the soft file-descriptor limit to the hard one and returns how
/// many connections fit: a full proxy must refuse with a 503, not fail to
/// accept (or to reach an App) for want of descriptors.
pub fn connections_that_fit(wanted: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        // Not allowed: keep the soft limit we have.
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let Some(nofile) = getrlimit(Resource::Nofile).current else {
        return wanted;
    };
    // Each connection may hold an upstream one; keep some for the admin
    // socket, the routes file, the metrics listener and the like.
    let fits = usize::try_from(nofile.saturating_sub(256) / 2).unwrap_or(usize::MAX);
    if fits < wanted {
        tracing::warn!(
            wanted,
            fits,
            nofile,
            "the file-descriptor limit holds fewer connections than --max-connections; serving at most {fits}"
        );
    }
    wanted.min(fits.max(1))
}

/// The connection limit's answer: written straight to the socket, without
/// hyper, so refusing costs one write and no task.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
cache-control: no-store\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 77\r\n\
\r\n\
503 Service Unavailable: the proxy has too many connections; try again soon.\n";

/// Refused connections kept open a moment to read the client's request
/// (closing with unread bytes would reset the connection and lose the 503);
/// past this many, they are closed at once.
const MAX_LINGERING: usize = 64;

/// Answers a connection over the limit with a 503 and closes it, and logs
/// (at most every 10 s, with a count) that the limit was reached.
pub fn refuse(stream: TcpStream, limit: usize) {
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    static LAST_LOG: AtomicU64 = AtomicU64::new(0);
    static LINGERING: AtomicUsize = AtomicUsize::new(0);
    let refused = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
    let now = coarse_secs();
    let last = LAST_LOG.load(Ordering::Relaxed);
    if (last == 0 || now >= last + 10)
        && LAST_LOG
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            limit,
            refused_total = refused,
            "connection limit reached: answering new connections 503 (see --max-connections)"
        );
    }
    // A fresh socket's send buffer is empty: the whole answer fits.
    let _ = stream.try_write(OVERLOADED);
    if LINGERING.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
        LINGERING.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    tokio::spawn(async move {
        let mut stream = stream;
        let mut sink = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        LINGERING.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Seconds since the first call: a clock for rate-limiting logs.
fn coarse_secs() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs()
        + 1
}

/// The HTTP/2 connection preface; hyper picks HTTP/2 when a connection
/// starts with it.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The bytes read from a connection before hyper sees it, replayed first.
#[derive(Debug, Default)]
pub struct Prefix {
    buf: [u8; 24],
    len: u8,
    pos: u8,
}

impl Prefix {
    /// Whether the connection starts with the HTTP/2 preface.
    pub fn is_h2(&self) -> bool {
        usize::from(self.len) == H2_PREFACE.len() && &self.buf == H2_PREFACE
    }
}

/// Reads until hyper can tell HTTP/1 from HTTP/2 without waiting (24 bytes,
/// or fewer that already differ from the HTTP/2 preface). hyper's own sniff
/// has no clock; this runs under the first-bytes deadline. `Ok(None)`: the
/// client closed without a byte.
pub async fn sniff(stream: &mut TcpStream) -> io::Result<Option<Prefix>> {
    let mut prefix = Prefix::default();
    loop {
        let len = usize::from(prefix.len);
        let n = stream.read(&mut prefix.buf[len..]).await?;
        if n == 0 {
            return if len == 0 { Ok(None) } else { Ok(Some(prefix)) };
        }
        let len = len + n;
        prefix.len = len as u8;
        if len == H2_PREFACE.len() || prefix.buf[..len] != H2_PREFACE[..len] {
            return Ok(Some(prefix));
        }
    }
}

/// A connection with its sniffed bytes put back in front. One branch per
/// read once they are consumed.
pub struct Prefixed<S> {
    prefix: Prefix,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(inner: S, prefix: Prefix) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = &mut this.prefix;
        if p.pos < p.len {
            let rest = &p.buf[usize::from(p.pos)..usize::from(p.len)];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            p.pos += n as u8;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The PROXY protocol v2 signature.
const PP2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest PROXY header we read (addresses plus TLVs); real ones are
/// far smaller.
const PP2_MAX_LEN: usize = 2048;

/// Reads a PROXY protocol v2 header; returns the client's address, or
/// `None` for a `LOCAL` header (the balancer's own health check) or an
/// address family other than TCP over IPv4/IPv6.
pub async fn read_proxy_v2(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut head = [0u8; 16];
    stream.read_exact(&mut head).await?;
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > PP2_MAX_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "PROXY header too long",
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    parse_proxy_v2(&head, &body).map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))
}

/// Parses a PROXY v2 header: its fixed 16 bytes and the `len` after them.
pub fn parse_proxy_v2(head: &[u8; 16], body: &[u8]) -> Result<Option<SocketAddr>, &'static str> {
    if &head[..12] != PP2_SIGNATURE {
        return Err("not a PROXY protocol v2 header");
    }
    if head[12] >> 4 != 2 {
        return Err("unsupported PROXY protocol version");
    }
    match head[12] & 0x0f {
        0 => return Ok(None),
        1 => {}
        _ => return Err("unknown PROXY command"),
    }
    match head[13] {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a = body.get(..12).ok_or("PROXY header too short for IPv4")?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let port = u16::from_be_bytes([a[8], a[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        // TCP over IPv6.
        0x21 => {
            let a = body.get(..36).ok_or("PROXY header too short for IPv6")?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        // UNSPEC, UDP, Unix: no client address to use.
        _ => Ok(None),
    }
}

/// Counts activity on a tunnel (both directions) so an idle one can be
/// closed. One relaxed add on a counter only this tunnel touches per read.
#[derive(Debug, Default)]
pub struct Activity(AtomicU64);

impl Activity {
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn seen(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An I/O object that counts its reads on an `Activity`.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.0.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Resolves once `activity` saw nothing for `idle` (checked four times per
/// period, so it fires between `idle` and 1.25 × `idle` after the last
/// byte).
pub async fn idle_for(activity: &Activity, idle: Duration) {
    let step = (idle / 4).max(Duration::from_millis(10));
    let mut last = activity.seen();
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(step).await;
        let now = activity.seen();
        if now == last {
            quiet += step;
            if quiet >= idle {
                return;
            }
        } else {
            last = now;
            quiet = Duration::ZERO;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let one: Cidr = "127.0.0.1".parse().expect("cidr");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        let v6: Cidr = "fd00::/8".parse().expect("cidr");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        assert!(!v6.contains("10.0.0.1".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    fn pp2(cmd: u8, fam: u8, body: &[u8]) -> [u8; 16] {
        let mut head = [0u8; 16];
        head[..12].copy_from_slice(PP2_SIGNATURE);
        head[12] = 0x20 | cmd;
        head[13] = fam;
        head[14..].copy_from_slice(&(body.len() as u16).to_be_bytes());
        head
    }

    #[test]
    fn proxy_v2_headers_parse() {
        let body = [203, 0, 113, 7, 10, 0, 0, 1, 0x30, 0x39, 0, 80];
        let got = parse_proxy_v2(&pp2(1, 0x11, &body), &body).expect("parse");
        assert_eq!(got, Some("203.0.113.7:12345".parse().expect("addr")));
        let mut body6 = [0u8; 36];
        body6[15] = 1;
        body6[32..34].copy_from_slice(&443u16.to_be_bytes());
        let got = parse_proxy_v2(&pp2(1, 0x21, &body6), &body6).expect("parse");
        assert_eq!(got, Some("[::1]:443".parse().expect("addr")));
        assert_eq!(parse_proxy_v2(&pp2(0, 0, &[]), &[]), Ok(None));
        let mut bad = pp2(1, 0x11, &body);
        bad[0] = b'G';
        assert!(parse_proxy_v2(&bad, &body).is_err());
        assert!(parse_proxy_v2(&pp2(1, 0x11, &body[..4]), &body[..4]).is_err());
    }

    #[test]
    fn the_overload_page_is_well_formed() {
        let text = std::str::from_utf8(OVERLOADED).expect("utf8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
