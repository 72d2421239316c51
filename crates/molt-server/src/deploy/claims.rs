//! The one-operation-per-App rule: a deploy claims its App, a second
//! request is told which deploy holds it, and a claim can be canceled or
//! interrupted. A deploy that adds domains also reserves them for its App
//! until its end: one lock covers checking a domain's owner (the Apps'
//! rows and the reservations) and reserving it, and a reservation is let
//! go only after the swap recorded the domains in the App's row, so two
//! Apps racing for one domain never both get it.

use super::*;

impl Deployer {
    /// Reserves the App for one operation, or names the one in progress.
    pub(crate) fn claim(
        &self,
        app: &str,
        deploy_id: &str,
    ) -> Result<CancellationToken, DeployError> {
        let mut active = self.active();
        if let Some(running) = active.get(app) {
            let message = if running.deploy_id == "delete" {
                format!("the App `{app}` is being deleted")
            } else if running.deploy_id == "resync" {
                format!("the App `{app}` is being resynced after a container restart; try again in a moment")
            } else {
                format!(
                    "the App `{app}` is busy with deploy {}; wait for it to finish or cancel it with `molt cancel {app}`",
                    running.deploy_id
                )
            };
            return Err(DeployError::Conflict {
                message,
                deploy_id: Some(running.deploy_id.clone()),
            });
        }
        let cancel = CancellationToken::new();
        active.insert(
            app.to_string(),
            Active {
                deploy_id: deploy_id.to_string(),
                cancel: cancel.clone(),
            },
        );
        Ok(cancel)
    }

    /// [`claim`](Self::claim), but waits (up to 3 s) while the App is only
    /// being resynced or settled after a container event: that takes
    /// milliseconds, and a deploy asked for meanwhile should not be refused.
    pub(super) async fn claim_patiently(
        &self,
        app: &str,
        deploy_id: &str,
    ) -> Result<CancellationToken, DeployError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            // Listening before trying, so a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.claim(app, deploy_id) {
                Err(DeployError::Conflict {
                    deploy_id: Some(holder),
                    ..
                }) if holder == "resync" => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return self.claim(app, deploy_id);
                    }
                }
                other => return other,
            }
        }
    }

    /// The deploy in progress for an App, if any.
    pub fn in_progress(&self, app: &str) -> Option<String> {
        self.active().get(app).map(|a| a.deploy_id.clone())
    }

    /// Cancels the deploy in progress: the new container is torn down and no
    /// traffic moves. Returns its id.
    pub fn cancel(&self, app: &str) -> Result<String, DeployError> {
        if self.store.get_app(app)?.is_none() {
            return Err(DeployError::NotFound(format!(
                "no App named `{app}`: see `molt apps list`"
            )));
        }
        match self.active().get(app) {
            Some(a) if a.deploy_id != "delete" && a.deploy_id != "resync" => {
                a.cancel.cancel();
                Ok(a.deploy_id.clone())
            }
            _ => Err(DeployError::Conflict {
                message: format!("the App `{app}` has no deploy in progress to cancel"),
                deploy_id: None,
            }),
        }
    }

    /// Stops the deploy in progress as a failure with `reason` (the engine
    /// restarted under it): it is torn down like a cancel — the new
    /// containers go, the old set keeps or gets back the traffic — but
    /// recorded as failed with the reason.
    pub fn interrupt(&self, app: &str, reason: &str) {
        let active = self.active();
        if let Some(a) = active
            .get(app)
            .filter(|a| a.deploy_id != "delete" && a.deploy_id != "resync")
        {
            self.interruptions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(a.deploy_id.clone(), reason.to_string());
            a.cancel.cancel();
        }
    }

    pub(crate) fn release(&self, app: &str) {
        // A cutover the database has not recorded yet keeps its domains
        // reserved until it is healed (the route already serves them).
        if !self.has_unrecorded_cutover(app) {
            self.release_domains(app);
        }
        self.active().remove(app);
        self.released.notify_waiters();
    }

    fn pending_domains(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.pending_domains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The App that serves `domain` or is adding it in a deploy.
    pub fn domain_owner(&self, domain: &str) -> anyhow::Result<Option<String>> {
        let pending = self.pending_domains();
        self.owner_with(&pending, domain)
    }

    fn owner_with(
        &self,
        pending: &HashMap<String, Vec<String>>,
        domain: &str,
    ) -> anyhow::Result<Option<String>> {
        if let Some((app, _)) = pending
            .iter()
            .find(|(_, ds)| ds.iter().any(|d| d == domain))
        {
            return Ok(Some(app.clone()));
        }
        Ok(self
            .store
            .list_apps()?
            .into_iter()
            .find(|a| a.hosts().iter().any(|h| h == domain))
            .map(|a| a.name))
    }

    /// Reserves `domains` for `app`, which holds its claim, or names the
    /// App that serves or is adding one of them. Kept until `release`.
    pub(super) fn reserve_domains(&self, app: &str, domains: &[String]) -> Result<(), DeployError> {
        if domains.is_empty() {
            return Ok(());
        }
        let mut pending = self.pending_domains();
        for d in domains {
            if let Some(owner) = self.owner_with(&pending, d)?.filter(|o| o != app) {
                return Err(super::settings::domain_taken(d, &owner));
            }
        }
        pending
            .entry(app.to_string())
            .or_default()
            .extend(domains.iter().cloned());
        Ok(())
    }

    /// Lets go of what `reserve_domains` reserved for `app`.
    pub(super) fn release_domains(&self, app: &str) {
        self.pending_domains().remove(app);
    }
}
