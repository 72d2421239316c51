//! Container starts that outlive a canceled deploy.
//!
//! Canceling a deploy drops its future, and with it any engine call in
//! flight; but the engine finishes creating a container whose request was
//! dropped. Such a container would appear after the tear-down looked for the
//! deploy's containers, and stay. So each start runs as its own task to its
//! end, and the tear-down first waits for the deploy's starts in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::RwLock;

/// The starts in flight, by deploy: each holds a read guard of its deploy's
/// lock; waiting for them is taking the write guard.
#[derive(Default)]
pub(super) struct Starts {
    by_deploy: Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

impl Starts {
    fn lock_of(&self, deploy: &str) -> Arc<RwLock<()>> {
        let mut map = self.by_deploy.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(deploy.to_string()).or_default())
    }

    /// Runs `start` as a task of its own, to its end even if the caller is
    /// dropped, and gives its result to the caller when it is still there.
    pub(super) async fn run<T, F>(&self, deploy: &str, start: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    {
        let guard = self.lock_of(deploy).read_owned().await;
        let task = tokio::spawn(async move {
            let result = start.await;
            drop(guard);
            result
        });
        task.await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the container start stopped: {e}")))
    }

    /// Waits until no start of `deploy` is in flight, then forgets it.
    pub(super) async fn settle(&self, deploy: &str) {
        let lock = self.lock_of(deploy);
        let _done = lock.write().await;
        self.by_deploy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(deploy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn a_dropped_start_still_finishes_and_settle_waits_for_it() {
        let starts = Arc::new(Starts::default());
        let finished = Arc::new(AtomicBool::new(false));
        let (go, gate) = tokio::sync::oneshot::channel::<()>();
        let flag = Arc::clone(&finished);
        let caller = {
            let starts = Arc::clone(&starts);
            tokio::spawn(async move {
                starts
                    .run("d1", async move {
                        let _ = gate.await;
                        flag.store(true, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
            })
        };
        // Let the start begin, then drop its caller (a cancel).
        while starts.lock_of("d1").try_write().is_ok() {
            tokio::task::yield_now().await;
        }
        caller.abort();
        let settle = {
            let starts = Arc::clone(&starts);
            tokio::spawn(async move { starts.settle("d1").await })
        };
        tokio::task::yield_now().await;
        assert!(
            !settle.is_finished(),
            "settle waits for the start in flight"
        );
        go.send(()).unwrap();
        settle.await.unwrap();
        assert!(finished.load(Ordering::SeqCst), "the start ran to its end");
    }
}
