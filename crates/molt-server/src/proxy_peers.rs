//! The proxies on other nodes (`molt server --proxy-peer`), so that a load
//! balancer or DNS in front of several nodes finds a proxy on each.
//!
//! Every route change goes to this node's proxy first (it stays the one
//! that decides: if it refuses, nothing changed), then to each peer that is
//! in date, all at once. A change returns only when every in-date peer took
//! it, or failed to within `PEER_CALL_TIMEOUT` and was marked out of date;
//! so a swap is done, and old replicas drain and stop, only once every
//! proxy that answers has moved off them (`wait_drained` waits on each of
//! them too). A peer that does not answer never blocks a deploy for longer
//! than that timeout.
//!
//! Targets on this node's loopback (Swarm tasks on the server's own node)
//! are sent to each peer at the address this node has on the way to that
//! peer, which is where the peer reaches them.
//!
//! Out of date is level-triggered: every second each peer is pinged; one
//! that is out of date, or answers with another pid (it restarted, with its
//! persisted routes but none of its pauses or certificates), gets the whole
//! route table and the pauses of this node's proxy (and `certs::sync` the
//! certificates), and counts as in date only once it has them all. Every
//! `AUDIT_EVERY` checks an in-date peer is compared all the same.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Result;
use futures_util::future::join_all;
use molt_proxy::admin::{Request, Response, Route, TlsCert};
use molt_proxy::{AdminClient, AdminToken, Paused};

use crate::proxy_link::ProxyLink;

/// How long a peer may take to answer one change before it is marked out
/// of date and the deploy goes on without it.
pub const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often each peer is pinged (and an out-of-date one brought in date).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Every this many checks, an in-date peer's table is compared with this
/// node's anyway, and corrected: a change that reached it late (it froze
/// with the request in its socket, and ran it after its resync) is undone.
const AUDIT_EVERY: u32 = 10;
/// Rounds of a resync before it gives up until the next check, when
/// changes keep landing while it runs.
const RESYNC_ROUNDS: usize = 5;

/// This node's proxy and the peers, behind the one `Routes` port.
pub struct ProxyFleet {
    local: Arc<ProxyLink>,
    peers: Vec<Peer>,
    /// Bumped after every change the local proxy took: a resync that saw
    /// another value when it began looks again before it says in date.
    changes: AtomicU64,
}

struct Peer {
    addr: String,
    admin: AdminClient,
    state: Mutex<PeerState>,
    /// Held while sending it a change, and for a whole resync: a resync
    /// never sends an older table over a change sent meanwhile.
    lane: tokio::sync::Mutex<()>,
    /// This node's address on the way to the peer (learnt at each check):
    /// loopback targets are sent to the peer at it.
    reach_us: Mutex<Option<IpAddr>>,
}

#[derive(Default)]
struct PeerState {
    in_date: bool,
    /// The pid that answered when it was last brought in date.
    pid: Option<u32>,
    /// Why it is out of date.
    problem: Option<String>,
    /// Whether going out of date was logged (once, until in date again).
    warned: bool,
    /// Checks since its table was last compared (see `AUDIT_EVERY`).
    since_audit: u32,
}

/// Whether a call to peers waits for each peer's lane (see `Peer::lane`).
#[derive(Clone, Copy)]
enum Lane {
    Change,
    Free,
}

/// What `molt debug` and `/metrics` say of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub addr: String,
    pub in_date: bool,
    pub problem: Option<String>,
}

impl ProxyFleet {
    /// Every peer starts out of date: the first check gives it the table.
    pub fn new(local: Arc<ProxyLink>, addrs: &[String], token: &AdminToken) -> Result<ProxyFleet> {
        let mut peers = Vec::new();
        for addr in addrs {
            peers.push(Peer {
                addr: addr.clone(),
                admin: AdminClient::tcp(addr, token.clone())?.with_timeout(PEER_CALL_TIMEOUT),
                state: Mutex::new(PeerState {
                    problem: Some("not reached yet".into()),
                    ..PeerState::default()
                }),
                reach_us: Mutex::new(None),
                lane: tokio::sync::Mutex::new(()),
            });
        }
        Ok(ProxyFleet {
            local,
            peers,
            changes: AtomicU64::new(0),
        })
    }

    /// Checks every peer once, at the same time (at start, so that the
    /// start-up reconcile's changes and drains reach the peers too).
    pub async fn check_now(&self) {
        join_all(self.peers.iter().map(|peer| self.check(peer))).await;
    }

    /// Checks each peer every second, on its own (a peer that hangs slows
    /// no other's checks), and brings out-of-date ones in date.
    pub fn spawn_keeper(self: Arc<Self>) {
        for index in 0..self.peers.len() {
            let fleet = Arc::clone(&self);
            tokio::spawn(async move {
                loop {
                    fleet.check(&fleet.peers[index]).await;
                    tokio::time::sleep(CHECK_EVERY).await;
                }
            });
        }
    }

    /// The peers' admin clients, for what goes to them outside the
    /// `Routes` port (ACME challenges).
    pub fn peer_admins(&self) -> Vec<AdminClient> {
        self.peers.iter().map(|p| p.admin.clone()).collect()
    }

    pub fn statuses(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|peer| {
                let state = peer.state();
                PeerStatus {
                    addr: peer.addr.clone(),
                    in_date: state.in_date,
                    problem: state.problem.clone(),
                }
            })
            .collect()
    }

    async fn check(&self, peer: &Peer) {
        let reach_us = our_address_towards(&peer.addr).await;
        let before = std::mem::replace(
            &mut *peer.reach_us.lock().unwrap_or_else(PoisonError::into_inner),
            reach_us,
        );
        if before.is_some() && before != reach_us {
            peer.out_of_date(format!(
                "this node's address towards it changed to {reach_us:?}"
            ));
        }
        let ping = match peer.admin.ping().await {
            Ok(ping) => ping,
            Err(e) => return peer.out_of_date(format!("does not answer: {e}")),
        };
        let audit = {
            let mut state = peer.state();
            if state.in_date && state.pid == Some(ping.pid) {
                state.since_audit += 1;
                if state.since_audit < AUDIT_EVERY {
                    return;
                }
                true
            } else {
                false
            }
        };
        peer.state().since_audit = 0;
        if !audit && peer.state().in_date {
            peer.out_of_date(format!(
                "restarted (pid {} now); its pauses and certificates are gone",
                ping.pid
            ));
        }
        match self.resync(peer, ping.pid).await {
            Ok(Some(0)) if audit => {}
            Ok(Some(sent)) if audit => {
                tracing::warn!(peer = %peer.addr, corrected = sent, "proxy peer had drifted from this node's proxy; corrected");
            }
            Ok(Some(sent)) => {
                tracing::info!(peer = %peer.addr, pid = ping.pid, changes_sent = sent, "proxy peer is in date");
            }
            Ok(None) => {}
            Err(e) => peer.out_of_date(format!("could not be brought in date: {e:#}")),
        }
    }

    /// Makes the peer's routes, pauses and certificates those of the local
    /// proxy and marks it in date (as `pid`); how many changes that took,
    /// or `None` when changes kept landing meanwhile (the next check tries
    /// again).
    async fn resync(&self, peer: &Peer, pid: u32) -> Result<Option<usize>> {
        let _lane = peer.lane.lock().await;
        let mut sent = 0;
        for _ in 0..RESYNC_ROUNDS {
            let before = self.changes.load(Ordering::SeqCst);
            let (want_routes, want_paused) = table(self.local.admin()).await?;
            let want_routes: Vec<Route> = want_routes
                .into_iter()
                .map(|route| peer.route(route))
                .collect();
            let (has_routes, has_paused) = table(&peer.admin).await?;
            for request in table_diff(&want_routes, &want_paused, &has_routes, &has_paused) {
                peer.admin.call(&request, PEER_CALL_TIMEOUT).await?;
                sent += 1;
            }
            // Certificates removed meanwhile go; missing ones are pushed by
            // `certs::sync`, which reads the keys from the store.
            let ours = self.local.admin().list_certs().await?;
            for domain in peer.admin.list_certs().await? {
                if !ours.contains(&domain) {
                    peer.admin.remove_cert(&domain).await?;
                    sent += 1;
                }
            }
            // Compared and marked under the peer's lock, which a change
            // takes after bumping the counter: a change either shows here
            // (another round) or finds the peer in date and sends itself.
            let mut state = peer.state();
            if self.changes.load(Ordering::SeqCst) == before {
                state.in_date = true;
                state.pid = Some(pid);
                state.problem = None;
                state.warned = false;
                return Ok(Some(sent));
            }
        }
        Ok(None)
    }

    /// Sends `request` to every in-date peer at once; the answers of those
    /// that took it. One that fails is marked out of date. A change
    /// (`Lane::Change`) goes through each peer's lane, so it is never
    /// overtaken by a resync's older table; reads and drains do not wait
    /// there.
    async fn to_peers(&self, request: &Request, timeout: Duration, lane: Lane) -> Vec<Response> {
        let calls = self
            .peers
            .iter()
            .filter(|p| p.state().in_date)
            .map(|peer| async move {
                let _lane = match lane {
                    Lane::Change => Some(peer.lane.lock().await),
                    Lane::Free => None,
                };
                if !peer.state().in_date {
                    // It went out of date meanwhile: its resync brings this.
                    return None;
                }
                match peer.admin.call(&peer.request(request), timeout).await {
                    Ok(answer) => Some(answer),
                    Err(e) => {
                        peer.out_of_date(format!("did not answer in time: {e}"));
                        None
                    }
                }
            });
        join_all(calls).await.into_iter().flatten().collect()
    }

    /// A change the local proxy took; now the peers.
    async fn changed(&self, request: Request) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        if !self.peers.is_empty() {
            self.to_peers(&request, PEER_CALL_TIMEOUT, Lane::Change)
                .await;
        }
    }
}

impl Peer {
    fn state(&self) -> std::sync::MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `request` as this peer must get it (loopback targets at our address).
    fn request(&self, request: &Request) -> Request {
        match request {
            Request::SetRoute { route } => Request::SetRoute {
                route: self.route(route.clone()),
            },
            Request::WaitDrained {
                app,
                addr,
                timeout_ms,
            } => Request::WaitDrained {
                app: app.clone(),
                addr: self.target_addr(addr),
                timeout_ms: *timeout_ms,
            },
            other => other.clone(),
        }
    }

    fn route(&self, mut route: Route) -> Route {
        for target in &mut route.targets {
            target.addr = self.target_addr(&target.addr);
        }
        route
    }

    fn target_addr(&self, addr: &str) -> String {
        let reach_us = *self.reach_us.lock().unwrap_or_else(PoisonError::into_inner);
        peer_target_addr(addr, reach_us)
    }

    /// Logged once, when it goes out of date.
    fn out_of_date(&self, problem: String) {
        let mut state = self.state();
        if !state.warned {
            tracing::warn!(peer = %self.addr, %problem, "proxy peer is out of date; deploys go on without it and it gets the whole route table once it answers");
            state.warned = true;
        }
        state.in_date = false;
        state.problem = Some(problem);
    }
}

/// A target on our loopback is reached by a peer at `reach_us`, our
/// address on the way to it (unless that is loopback too: a peer on this
/// node).
fn peer_target_addr(addr: &str, reach_us: Option<IpAddr>) -> String {
    match (addr.parse::<SocketAddr>(), reach_us) {
        (Ok(target), Some(ours)) if target.ip().is_loopback() && !ours.is_loopback() => {
            SocketAddr::new(ours, target.port()).to_string()
        }
        _ => addr.to_string(),
    }
}

/// The source address this node would use to reach `peer` (`host:port`):
/// a UDP socket connected there, which sends nothing, says it.
async fn our_address_towards(peer: &str) -> Option<IpAddr> {
    let to = tokio::net::lookup_host(peer).await.ok()?.next()?;
    let any: SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(any).await.ok()?;
    socket.connect(to).await.ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// A proxy's routes and pauses, in one `list_routes`.
async fn table(admin: &AdminClient) -> Result<(Vec<Route>, Vec<Paused>)> {
    let answer = admin.call(&Request::ListRoutes, PEER_CALL_TIMEOUT).await?;
    Ok((
        answer.routes.unwrap_or_default(),
        answer.paused.unwrap_or_default(),
    ))
}

/// The requests that turn the table (`has_*`) into the wanted one: routes
/// set where they differ, removed where unwanted, pauses set and lifted.
fn table_diff(
    want_routes: &[Route],
    want_paused: &[Paused],
    has_routes: &[Route],
    has_paused: &[Paused],
) -> Vec<Request> {
    let has: HashMap<&str, &Route> = has_routes.iter().map(|r| (r.app.as_str(), r)).collect();
    let wanted: HashMap<&str, &Route> = want_routes.iter().map(|r| (r.app.as_str(), r)).collect();
    let mut requests = Vec::new();
    for route in want_routes {
        if has.get(route.app.as_str()) != Some(&route) {
            requests.push(Request::SetRoute {
                route: route.clone(),
            });
        }
    }
    for route in has_routes {
        if !wanted.contains_key(route.app.as_str()) {
            requests.push(Request::RemoveRoute {
                app: route.app.clone(),
            });
        }
    }
    for paused in want_paused {
        if !has_paused.contains(paused) {
            requests.push(Request::Pause {
                app: paused.app.clone(),
                max_pause_ms: paused.max_pause_ms,
                max_queued: paused.max_queued,
            });
        }
    }
    for paused in has_paused {
        if !want_paused.iter().any(|p| p.app == paused.app) {
            requests.push(Request::Resume {
                app: paused.app.clone(),
            });
        }
    }
    requests
}

#[async_trait::async_trait]
impl crate::ports::Routes for ProxyFleet {
    async fn set_route(&self, route: Route) -> Result<()> {
        self.local.set_route(route.clone()).await?;
        self.changed(Request::SetRoute { route }).await;
        Ok(())
    }

    async fn remove_route(&self, app: &str) -> Result<()> {
        self.local.remove_route(app).await?;
        self.changed(Request::RemoveRoute {
            app: app.to_string(),
        })
        .await;
        Ok(())
    }

    async fn pause(&self, app: &str, max_pause: Duration, max_queued: usize) -> Result<()> {
        self.local.pause(app, max_pause, max_queued).await?;
        self.changed(Request::Pause {
            app: app.to_string(),
            max_pause_ms: u64::try_from(max_pause.as_millis()).unwrap_or(u64::MAX),
            max_queued,
        })
        .await;
        Ok(())
    }

    async fn resume(&self, app: &str) -> Result<()> {
        self.local.resume(app).await?;
        self.changed(Request::Resume {
            app: app.to_string(),
        })
        .await;
        Ok(())
    }

    async fn routes(&self) -> Result<Vec<Route>> {
        self.local.routes().await
    }

    /// Drained once drained on this node's proxy and on every in-date peer
    /// (each waits up to `timeout`, at the same time); the cut connections
    /// are summed.
    async fn wait_drained(&self, app: &str, addr: &str, timeout: Duration) -> Result<(bool, u64)> {
        let request = Request::WaitDrained {
            app: app.to_string(),
            addr: addr.to_string(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let (local, peers) = tokio::join!(
            self.local.wait_drained(app, addr, timeout),
            self.to_peers(&request, timeout + PEER_CALL_TIMEOUT, Lane::Free)
        );
        let (mut drained, mut closed) = local?;
        for answer in peers {
            drained &= answer.drained.unwrap_or(true);
            closed += answer.closed.unwrap_or(0);
        }
        Ok((drained, closed))
    }

    /// Certificates go to every in-date peer too (over TLS). Kept in
    /// memory only, a peer's certificates are gone when it restarts:
    /// `cert_domains` is what this node's proxy and every in-date peer all
    /// hold, so `certs::sync` pushes the missing ones again.
    async fn put_cert(&self, cert: TlsCert) -> Result<()> {
        self.local.admin().put_cert(cert.clone()).await?;
        self.changed(Request::PutCert { cert }).await;
        Ok(())
    }

    async fn remove_cert(&self, domain: &str) -> Result<()> {
        self.local.admin().remove_cert(domain).await?;
        self.changed(Request::RemoveCert {
            domain: domain.to_string(),
        })
        .await;
        Ok(())
    }

    async fn cert_domains(&self) -> Result<Vec<String>> {
        let mut held = self.local.admin().list_certs().await?;
        for answer in self
            .to_peers(&Request::ListCerts, PEER_CALL_TIMEOUT, Lane::Free)
            .await
        {
            let theirs = answer.domains.unwrap_or_default();
            held.retain(|domain| theirs.contains(domain));
        }
        Ok(held)
    }

    fn peers(&self) -> Vec<PeerStatus> {
        self.statuses()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use molt_proxy::admin::Target;

    fn route(app: &str, addr: &str) -> Route {
        Route {
            app: app.into(),
            hosts: vec![format!("{app}.localhost")],
            targets: vec![Target {
                addr: addr.into(),
                id: "c".into(),
            }],
            upstream_timeout_ms: 1000,
            drain_timeout_ms: 1000,
            tunnel_idle_timeout_ms: None,
            max_body_bytes: None,
            https_redirect: None,
            hsts_max_age_secs: None,
            console: false,
        }
    }

    fn paused(app: &str) -> Paused {
        Paused {
            app: app.into(),
            max_pause_ms: 100,
            max_queued: 10,
        }
    }

    fn ops(requests: &[Request]) -> Vec<String> {
        requests
            .iter()
            .map(|r| match r {
                Request::SetRoute { route } => format!("set {}", route.app),
                Request::RemoveRoute { app } => format!("remove {app}"),
                Request::Pause { app, .. } => format!("pause {app}"),
                Request::Resume { app } => format!("resume {app}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn loopback_targets_reach_a_peer_at_our_address() {
        let ours = Some("10.0.0.5".parse().expect("ip"));
        assert_eq!(peer_target_addr("127.0.0.1:32768", ours), "10.0.0.5:32768");
        assert_eq!(peer_target_addr("10.0.0.7:32768", ours), "10.0.0.7:32768");
        let v6 = Some("fd00::5".parse().expect("ip"));
        assert_eq!(peer_target_addr("127.0.0.1:80", v6), "[fd00::5]:80");
        // A peer on this node, or no route to it known: as it is.
        let lo = Some("127.0.0.1".parse().expect("ip"));
        assert_eq!(peer_target_addr("127.0.0.1:80", lo), "127.0.0.1:80");
        assert_eq!(peer_target_addr("127.0.0.1:80", None), "127.0.0.1:80");
    }

    #[test]
    fn a_table_in_date_needs_nothing() {
        let routes = [route("a", "10.0.0.1:80"), route("b", "10.0.0.2:80")];
        assert!(table_diff(&routes, &[paused("a")], &routes, &[paused("a")]).is_empty());
    }

    #[test]
    fn a_stale_table_gets_what_differs_and_loses_what_is_gone() {
        let want = [route("a", "10.0.0.1:80"), route("b", "10.0.0.2:80")];
        let has = [route("a", "10.0.0.9:80"), route("gone", "10.0.0.3:80")];
        let diff = table_diff(&want, &[paused("b")], &has, &[paused("gone")]);
        assert_eq!(
            ops(&diff),
            ["set a", "set b", "remove gone", "pause b", "resume gone"]
        );
    }
}
