//! Holding an App's requests while its route is paused: during a recreate
//! (no room for the old and the new container at once) there is a moment
//! with nothing to send to, and clients should wait through it rather than
//! fail. A held request is simply a request whose handler has not picked a
//! target yet: its body stays unread in the connection (the client is
//! back-pressured, nothing is buffered), and it is sent to whatever targets
//! are current when the route resumes.
//!
//! Bounded twice: a request waits at most `max_pause_ms`, and at most
//! `max_queued` requests wait at once; past either, a 503 says why.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// A pause's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseLimits {
    pub max_pause_ms: u64,
    pub max_queued: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct HoldState {
    paused: Option<PauseLimits>,
    /// Bumped on every resume, so a request that missed a quick
    /// resume-then-pause still leaves (it was released; a later pause is
    /// for later requests).
    resumes: u64,
    /// This process handed its sockets to a new proxy, which now owns the
    /// routes: held requests go on to it (see `forward`).
    handed_over: bool,
}

/// How a request got past the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not paused, or resumed: pick a target now.
    Go,
    /// Held when this proxy handed over: the successor decides.
    HandedOver,
    /// Waited `max_pause_ms` (the limit it was held under).
    TimedOut { max_pause_ms: u64 },
    /// `max_queued` requests were already waiting.
    Full { max_queued: usize },
}

/// A route's hold. Every route has one and almost none is ever paused, so
/// it is small: the state behind a plain mutex, a flag the request path
/// reads without taking it, and one `Notify` that wakes whoever waits when
/// the state changes (a `watch` channel per route was most of the memory
/// 10,000 routes took).
#[derive(Debug, Default)]
pub struct Hold {
    /// `state.paused.is_some()`, readable with one load.
    paused: AtomicBool,
    state: Mutex<HoldState>,
    changed: Notify,
    /// Requests waiting now.
    waiting: AtomicUsize,
    /// Requests that were ever held (not counting those refused at once).
    held_total: AtomicU64,
}

impl Hold {
    /// Changes the state and wakes every waiter, who then looks again.
    fn change(&self, f: impl FnOnce(&mut HoldState)) {
        {
            let mut state = self.lock();
            f(&mut state);
            self.paused.store(state.paused.is_some(), Ordering::SeqCst);
        }
        self.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HoldState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> HoldState {
        *self.lock()
    }

    /// Resolves once `done` holds for the state (checked at once, then on
    /// every change).
    async fn wait_until(&self, done: impl Fn(&HoldState) -> bool) -> HoldState {
        loop {
            // Registered before looking, so a change in between is not missed.
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            let now = self.now();
            if done(&now) {
                return now;
            }
            changed.await;
        }
    }

    /// Pauses, or changes the limits of a pause in place.
    pub fn pause(&self, limits: PauseLimits) {
        self.change(|s| s.paused = Some(limits));
    }

    /// Releases every waiting request.
    pub fn resume(&self) {
        if !self.paused.load(Ordering::SeqCst) {
            return;
        }
        self.change(|s| {
            if s.paused.take().is_some() {
                s.resumes += 1;
            }
        });
    }

    /// After a handover: waiting and future paused requests go to the
    /// successor, which holds them under the pause it inherited.
    pub fn hand_over(&self) {
        self.change(|s| s.handed_over = true);
    }

    pub fn limits(&self) -> Option<PauseLimits> {
        if !self.paused.load(Ordering::SeqCst) {
            return None;
        }
        self.now().paused
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn held_total(&self) -> u64 {
        self.held_total.load(Ordering::Relaxed)
    }

    /// Whether the route is paused now or becomes paused within `within`
    /// (a handover counts: the successor holds then).
    pub async fn wait_for_pause(&self, within: Duration) -> bool {
        tokio::time::timeout(
            within,
            self.wait_until(|s| s.paused.is_some() || s.handed_over),
        )
        .await
        .is_ok()
    }

    /// Returns at once unless paused; otherwise waits for the resume within
    /// the pause's limits.
    pub async fn admit(&self) -> Admission {
        // The common case, not paused, is one load.
        if !self.paused.load(Ordering::SeqCst) {
            return Admission::Go;
        }
        let entry = self.now();
        let Some(limits) = entry.paused else {
            return Admission::Go;
        };
        if entry.handed_over {
            return Admission::HandedOver;
        }
        let _slot = match Slot::take(&self.waiting, limits.max_queued) {
            Some(slot) => slot,
            None => {
                return Admission::Full {
                    max_queued: limits.max_queued,
                }
            }
        };
        self.held_total.fetch_add(1, Ordering::Relaxed);
        let released = tokio::time::timeout(
            Duration::from_millis(limits.max_pause_ms.min(crate::admin::MAX_TIMEOUT_MS)),
            self.wait_until(|s| s.paused.is_none() || s.resumes != entry.resumes || s.handed_over),
        )
        .await;
        match released {
            // Still the same pause, so it was the handover that woke us.
            Ok(now) if now.paused.is_some() && now.resumes == entry.resumes => {
                Admission::HandedOver
            }
            // Resumed (a route that is removed is resumed too, and picking
            // a target then answers for it).
            Ok(_) => Admission::Go,
            Err(_) => Admission::TimedOut {
                max_pause_ms: limits.max_pause_ms,
            },
        }
    }
}

/// One place among the waiting requests, given back on drop (a client that
/// goes away frees its place too).
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(waiting: &'a AtomicUsize, max: usize) -> Option<Self> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(waiting))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limits(ms: u64, queued: usize) -> PauseLimits {
        PauseLimits {
            max_pause_ms: ms,
            max_queued: queued,
        }
    }

    #[tokio::test]
    async fn a_pause_that_comes_within_the_wait_is_seen() {
        let hold = Arc::new(Hold::default());
        assert!(!hold.wait_for_pause(Duration::from_millis(20)).await);
        let pauser = Arc::clone(&hold);
        let waiting =
            tokio::spawn(async move { pauser.wait_for_pause(Duration::from_secs(10)).await });
        tokio::task::yield_now().await;
        hold.pause(limits(1000, 10));
        assert!(waiting.await.unwrap());
        // Already paused: at once.
        assert!(hold.wait_for_pause(Duration::ZERO).await);
    }

    #[tokio::test]
    async fn unpaused_goes_at_once() {
        assert_eq!(Hold::default().admit().await, Admission::Go);
    }

    #[tokio::test]
    async fn resume_releases_and_bounds_apply() {
        let hold = Arc::new(Hold::default());
        hold.pause(limits(10_000, 1));
        let waiter = {
            let hold = Arc::clone(&hold);
            tokio::spawn(async move { hold.admit().await })
        };
        while hold.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(hold.admit().await, Admission::Full { max_queued: 1 });
        // A quick resume + pause still releases the one that waited.
        hold.resume();
        hold.pause(limits(10_000, 1));
        assert_eq!(waiter.await.expect("join"), Admission::Go);
        assert_eq!(hold.waiting(), 0);
        assert_eq!(hold.held_total(), 1);

        hold.pause(limits(20, 5));
        assert_eq!(hold.admit().await, Admission::TimedOut { max_pause_ms: 20 });
        hold.hand_over();
        assert_eq!(hold.admit().await, Admission::HandedOver);
    }
}
