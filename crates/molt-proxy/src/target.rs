//! One upstream (a container) as the proxy sees it: a count of what is in
//! flight on it, so that draining is "wait until zero or timeout", and the
//! close that ends its keep-alive connections (kept in `pool`).

use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::Authority;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::admin::Target;
use crate::pool::IdleConns;

/// Set in `TargetState::load` once the target is closed: drained or cut,
/// it takes nothing new. The bits below it count requests in flight plus
/// upgraded connections open. One word, so that "acquire unless closed"
/// and "close unless busy" are each a single atomic step, and a request
/// pays one compare-and-swap to start and one subtraction to end.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// How waiting for a retired target to go idle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleWait {
    /// Nothing in flight any more.
    Idle,
    /// The target was put back in service (or retired anew) meanwhile.
    Superseded,
    /// The deadline passed with work still in flight.
    TimedOut,
}

pub struct TargetState {
    pub target: Target,
    /// Keep-alive connections waiting for the next request.
    pub idle: IdleConns,
    /// The in-flight count and the `CLOSED` flag.
    load: AtomicUsize,
    /// Bumped whenever the target is retired or brought back, so a drain
    /// started for an older retirement knows it no longer applies. Zero
    /// until the first retirement: until then nobody waits for idle.
    epoch: AtomicU64,
    /// What the close cut (requests and upgraded connections still open),
    /// so whoever waits on the drain can report it truthfully.
    cut: AtomicUsize,
    /// Wakes whoever waits on the target (the close, a drain) when the
    /// close, the epoch or the count reaching zero changes what they wait
    /// for. One `Notify` rather than a `watch` channel per target: that was
    /// much of the memory 10,000 routes took.
    changed: Notify,
}

impl TargetState {
    pub fn new(target: Target) -> Result<Arc<Self>, String> {
        check_addr(&target.addr)?;
        Ok(Arc::new(TargetState {
            target,
            idle: IdleConns::default(),
            load: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            cut: AtomicUsize::new(0),
            changed: Notify::new(),
        }))
    }

    pub fn in_flight(&self) -> usize {
        self.load.load(Ordering::Relaxed) & !CLOSED
    }

    pub fn is_closed(&self) -> bool {
        self.load.load(Ordering::SeqCst) & CLOSED != 0
    }

    /// Counts one more request or connection, unless the target is closed.
    /// The count goes down when the guard drops, whatever path the request
    /// takes.
    pub fn try_acquire(self: &Arc<Self>) -> Option<InFlightGuard> {
        self.load
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |load| {
                (load & CLOSED == 0).then_some(load + 1)
            })
            .ok()
            .map(|_| InFlightGuard {
                target: Arc::clone(self),
            })
    }

    /// Resolves once `done` holds (checked at once, then on every change).
    async fn wait_until(&self, done: impl Fn(&Self) -> bool) {
        loop {
            // Registered before looking, so a change in between is not missed.
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }

    /// Resolves once the target is closed; in-flight work races against it.
    pub async fn closed(&self) {
        self.wait_until(Self::is_closed).await;
    }

    /// Marks a retirement or a return to service; returns the new epoch.
    pub fn bump_epoch(&self) -> u64 {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.changed.notify_waiters();
        epoch
    }

    /// Waits until nothing is in flight, the epoch moves on, or `deadline`.
    pub async fn wait_idle(&self, epoch: u64, deadline: Instant) -> IdleWait {
        let waited = tokio::time::timeout_at(
            deadline,
            self.wait_until(|t| {
                let load = t.load.load(Ordering::SeqCst);
                load & !CLOSED == 0 || load & CLOSED != 0 || t.epoch.load(Ordering::SeqCst) != epoch
            }),
        )
        .await;
        match waited {
            Ok(()) if self.epoch.load(Ordering::SeqCst) != epoch => IdleWait::Superseded,
            Ok(()) => IdleWait::Idle,
            Err(_) => IdleWait::TimedOut,
        }
    }

    /// Closes the target if nothing is in flight; false if something is
    /// (it raced in through a stale target set).
    pub fn close_if_idle(&self) -> bool {
        let closed = self
            .load
            .compare_exchange(0, CLOSED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if closed {
            self.changed.notify_waiters();
        }
        // The close ends the target's keep-alive connections (their tasks
        // wait on it).
        if closed || self.is_closed() {
            self.idle.clear();
            return true;
        }
        false
    }

    /// Closes the target whatever is in flight: pending requests answer 502
    /// and upgraded connections are cut. Returns how many were cut.
    pub fn force_close(&self) -> u64 {
        let before = self.load.fetch_or(CLOSED, Ordering::SeqCst);
        let mut cut = 0;
        if before & CLOSED == 0 {
            cut = before;
            self.cut.store(cut, Ordering::SeqCst);
            self.changed.notify_waiters();
        }
        self.idle.clear();
        u64::try_from(cut).unwrap_or(u64::MAX)
    }

    /// How much the close cut: 0 when it drained on its own or is open.
    pub fn cut_on_close(&self) -> u64 {
        u64::try_from(self.cut.load(Ordering::SeqCst)).unwrap_or(u64::MAX)
    }
}

/// Checks that a target's address is `host:port`.
pub fn check_addr(addr: &str) -> Result<(), String> {
    let authority: Authority = addr
        .parse()
        .map_err(|e| format!("target address `{addr}` is not host:port: {e}"))?;
    if authority.port_u16().is_none() {
        return Err(format!("target address `{addr}` has no port"));
    }
    Ok(())
}

/// One unit of in-flight work on a target; decrements on drop.
pub struct InFlightGuard {
    target: Arc<TargetState>,
}

impl InFlightGuard {
    pub fn target(&self) -> &Arc<TargetState> {
        &self.target
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let target = &self.target;
        let before = target.load.fetch_sub(1, Ordering::SeqCst);
        // Only the last one out wakes anyone, and only on a target that was
        // ever retired (a drain can wait on no other): a request on a
        // target in service touches nothing but its count.
        if before & !CLOSED == 1 && target.epoch.load(Ordering::SeqCst) != 0 {
            target.changed.notify_waiters();
        }
    }
}

impl std::fmt::Debug for InFlightGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlightGuard")
            .field("addr", &self.target.target.addr)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn target() -> Arc<TargetState> {
        TargetState::new(Target {
            addr: "127.0.0.1:9".into(),
            id: "c1".into(),
        })
        .expect("valid target")
    }

    #[tokio::test]
    async fn guard_counts_and_close_blocks_new_work() {
        let t = target();
        let g = t.try_acquire().expect("open");
        assert_eq!(t.in_flight(), 1);
        assert!(!t.close_if_idle());
        drop(g);
        assert_eq!(t.in_flight(), 0);
        assert!(t.close_if_idle());
        assert!(t.try_acquire().is_none());
        assert!(t.is_closed());
    }

    #[tokio::test]
    async fn wait_idle_sees_release_and_supersede() {
        let t = target();
        let epoch = t.bump_epoch();
        let g = t.try_acquire().expect("open");
        let deadline = Instant::now() + Duration::from_secs(5);
        let waiter = {
            let t = Arc::clone(&t);
            tokio::spawn(async move { t.wait_idle(epoch, deadline).await })
        };
        drop(g);
        assert_eq!(waiter.await.expect("join"), IdleWait::Idle);

        let _g = t.try_acquire().expect("open");
        let waiter = {
            let t = Arc::clone(&t);
            tokio::spawn(async move { t.wait_idle(epoch, deadline).await })
        };
        t.bump_epoch();
        assert_eq!(waiter.await.expect("join"), IdleWait::Superseded);
        assert_eq!(t.force_close(), 1);
    }

    #[test]
    fn rejects_addr_without_port() {
        let bad = TargetState::new(Target {
            addr: "10.0.0.1".into(),
            id: "x".into(),
        });
        assert!(bad.is_err());
    }
}
