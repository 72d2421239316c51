//! One upstream (a container) as the proxy sees it: a count of what is in
//! flight on it, so that draining is "wait until zero or timeout", and the
//! close that ends its keep-alive connections (kept in `pool`).

use std::sync::Arc;

use http::uri::Authority;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::admin::Target;
use crate::pool::IdleConns;

/// Everything that changes about a target, in one watch channel so that
/// "acquire unless closed" and "close unless busy" are each atomic.
///
/// Every request in flight waits on this channel for the close, so changes
/// to the count are made silently (`send_if_modified` returning false)
/// except the one a drain waits for, the count reaching zero. Waking every
/// waiter on every request made the proxy's cost grow with its concurrency.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    /// Requests in flight plus upgraded connections open.
    in_flight: usize,
    /// Terminal: the target was drained or cut; nothing new may start on it.
    closed: bool,
    /// What the close cut (requests and upgraded connections still open),
    /// so whoever waits on the drain can report it truthfully.
    cut: usize,
    /// Bumped whenever the target is retired or brought back, so a drain
    /// started for an older retirement knows it no longer applies.
    epoch: u64,
}

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
    load: watch::Sender<Load>,
}

impl TargetState {
    pub fn new(target: Target) -> Result<Arc<Self>, String> {
        let authority: Authority = target
            .addr
            .parse()
            .map_err(|e| format!("target address `{}` is not host:port: {e}", target.addr))?;
        if authority.port_u16().is_none() {
            return Err(format!("target address `{}` has no port", target.addr));
        }
        Ok(Arc::new(TargetState {
            target,
            idle: IdleConns::default(),
            load: watch::Sender::new(Load::default()),
        }))
    }

    pub fn in_flight(&self) -> usize {
        self.load.borrow().in_flight
    }

    pub fn is_closed(&self) -> bool {
        self.load.borrow().closed
    }

    /// Counts one more request or connection, unless the target is closed.
    /// The count goes down when the guard drops, whatever path the request
    /// takes.
    pub fn try_acquire(self: &Arc<Self>) -> Option<InFlightGuard> {
        // Counting up wakes no one (see `Load`): the flag says whether the
        // count went up, and the change is silent.
        let mut acquired = false;
        self.load.send_if_modified(|load| {
            if !load.closed {
                load.in_flight += 1;
                acquired = true;
            }
            false
        });
        acquired.then(|| InFlightGuard {
            target: Arc::clone(self),
        })
    }

    /// Resolves once the target is closed; in-flight work races against it.
    pub async fn closed(&self) {
        let mut rx = self.load.subscribe();
        // An error means the sender is gone, i.e. the target itself: done.
        let _ = rx.wait_for(|load| load.closed).await;
    }

    /// Marks a retirement or a return to service; returns the new epoch.
    pub fn bump_epoch(&self) -> u64 {
        let mut epoch = 0;
        self.load.send_modify(|load| {
            load.epoch += 1;
            epoch = load.epoch;
        });
        epoch
    }

    /// Waits until nothing is in flight, the epoch moves on, or `deadline`.
    pub async fn wait_idle(&self, epoch: u64, deadline: Instant) -> IdleWait {
        let mut rx = self.load.subscribe();
        let waited = tokio::time::timeout_at(
            deadline,
            rx.wait_for(|load| load.in_flight == 0 || load.epoch != epoch || load.closed),
        )
        .await;
        match waited {
            Ok(Ok(load)) if load.epoch != epoch => IdleWait::Superseded,
            Ok(_) => IdleWait::Idle,
            Err(_) => IdleWait::TimedOut,
        }
    }

    /// Closes the target if nothing is in flight; false if something is
    /// (it raced in through a stale target set).
    pub fn close_if_idle(&self) -> bool {
        let closed = self.load.send_if_modified(|load| {
            if load.in_flight == 0 && !load.closed {
                load.closed = true;
                true
            } else {
                false
            }
        });
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
        let mut cut = 0;
        self.load.send_if_modified(|load| {
            if load.closed {
                return false;
            }
            cut = load.in_flight;
            load.closed = true;
            load.cut = cut;
            true
        });
        self.idle.clear();
        u64::try_from(cut).unwrap_or(u64::MAX)
    }

    /// How much the close cut: 0 when it drained on its own or is open.
    pub fn cut_on_close(&self) -> u64 {
        u64::try_from(self.load.borrow().cut).unwrap_or(u64::MAX)
    }
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
        // Only the last one out wakes anyone (a drain waiting for idle).
        self.target.load.send_if_modified(|load| {
            load.in_flight = load.in_flight.saturating_sub(1);
            load.in_flight == 0
        });
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
