//! Removing what a deploy that did not swap started.

use super::*;

impl Deployer {
    /// Removes whatever a deploy that did not swap started, including a
    /// container created just before a cancel; never a serving container.
    pub(super) async fn tear_down(&self, deploy: &DeployRow, known: &[String]) {
        // A start the cancel cut off still makes its container: wait for it.
        self.starts.settle(&deploy.id).await;
        let mut ids: Vec<String> = known.to_vec();
        if let Ok(found) = self.runtime.list(Some(&deploy.app)).await {
            ids.extend(
                found
                    .into_iter()
                    .filter(|c| c.deploy == deploy.id)
                    .map(|c| c.id),
            );
        }
        let serving: HashSet<String> = self
            .store
            .get_app(&deploy.app)
            .ok()
            .flatten()
            .and_then(|app| self.serving_rows(&app).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.container_id)
            .collect();
        ids.retain(|id| !serving.contains(id));
        ids.sort();
        ids.dedup();
        for id in ids {
            // A rolling deploy's roll-back removed some already.
            if matches!(self.runtime.state(&id).await, Ok(None)) {
                continue;
            }
            // Keep the failed container's last words in the deploy's record
            // before the container goes, with the App's secrets masked.
            let output = self.runtime.logs_tail(&id, 30).await;
            let output = self.mask_secrets(&deploy.app, &deploy.env, &output);
            if !output.is_empty() {
                let _ = self.store.event(
                    &deploy.id,
                    &format!(
                        "last output of container {}:\n{}",
                        short(&id),
                        indent(&output)
                    ),
                );
            }
            match self.runtime.remove(&id).await {
                Ok(()) => {
                    // A first deploy (or an App whose containers are gone)
                    // had no previous version to keep.
                    let kept = if serving.is_empty() {
                        ""
                    } else {
                        "; the previous version kept serving"
                    };
                    let _ = self.store.event(
                        &deploy.id,
                        &format!("removed the new container {}{kept}", short(&id)),
                    );
                }
                Err(e) => tracing::error!(
                    "cannot remove the container {id} of deploy {}: {e:#}",
                    deploy.id
                ),
            }
        }
    }
}
