//! The deploy feed: the store announces each committed change to a deploy
//! (a new timeline entry, a status change), so live views (the SSE stream,
//! the dashboard's live regions) wait for one instead of polling the
//! database. An announcement only says *which* deploy changed; readers then
//! read the rows from the store, so a missed or lagged announcement costs
//! latency, never data. Waiters also keep a slow fallback tick, for changes
//! that are not announced (an App's status, its containers, its logs).

use std::time::Duration;
use tokio::sync::broadcast;

/// How many announcements a slow subscriber may fall behind before it is
/// told it lagged (and re-reads from where it was).
const CAPACITY: usize = 256;

/// One committed change to a deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployChange {
    pub app: String,
    pub deploy_id: String,
}

/// Why a [`Feed::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A wanted change was announced.
    Changed,
    /// The subscriber fell behind: something wanted may have been missed.
    Lagged,
    /// Nothing wanted within the fallback interval.
    Tick,
}

/// The sending side, owned by the store.
pub struct Feed {
    tx: broadcast::Sender<DeployChange>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Feed {
    /// Announces a change; nobody listening is fine.
    pub fn announce(&self, app: &str, deploy_id: &str) {
        let _ = self.tx.send(DeployChange {
            app: app.to_string(),
            deploy_id: deploy_id.to_string(),
        });
    }

    /// Subscribe *before* reading the rows a view shows: a change committed
    /// between the read and the wait is then still delivered.
    pub fn subscribe(&self) -> broadcast::Receiver<DeployChange> {
        self.tx.subscribe()
    }

    /// Waits until a change that `wanted` accepts is announced, the
    /// subscriber lagged, or `fallback` passed.
    pub async fn wait(
        rx: &mut broadcast::Receiver<DeployChange>,
        fallback: Duration,
        wanted: impl Fn(&DeployChange) -> bool,
    ) -> Woken {
        let until = tokio::time::Instant::now() + fallback;
        loop {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Err(_) => return Woken::Tick,
                Ok(Ok(change)) if wanted(&change) => return Woken::Changed,
                Ok(Ok(_)) => continue,
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => return Woken::Lagged,
                // The store is gone (never while the server runs): only the
                // tick is left.
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    tokio::time::sleep_until(until).await;
                    return Woken::Tick;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_on_a_wanted_change_and_skips_others() {
        let feed = Feed::default();
        let mut rx = feed.subscribe();
        feed.announce("other", "d9");
        feed.announce("web", "d1");
        let woken = Feed::wait(&mut rx, Duration::from_secs(30), |c| c.app == "web").await;
        assert_eq!(woken, Woken::Changed);
    }

    #[tokio::test]
    async fn without_a_change_the_fallback_tick_wakes() {
        let feed = Feed::default();
        let mut rx = feed.subscribe();
        feed.announce("other", "d9");
        let woken = Feed::wait(&mut rx, Duration::from_millis(50), |c| c.app == "web").await;
        assert_eq!(woken, Woken::Tick);
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_so() {
        let feed = Feed::default();
        let mut rx = feed.subscribe();
        for i in 0..CAPACITY + 1 {
            feed.announce("web", &format!("d{i}"));
        }
        let woken = Feed::wait(&mut rx, Duration::from_secs(30), |_| true).await;
        assert_eq!(woken, Woken::Lagged);
    }
}
