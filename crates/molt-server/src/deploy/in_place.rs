//! `restart --hard`: the serving containers restart in place.

use super::*;

impl Deployer {
    /// `restart --hard`: each serving container is stopped and started again
    /// in place, one after the other. With one replica requests fail while
    /// it is down; with several, each leaves the route (and drains) before
    /// it stops and comes back once healthy, so the others serve meanwhile.
    /// A cancel is honoured between replicas only: a replica that was
    /// stopped is always started again. `None` when canceled.
    pub(super) async fn restart_in_place(
        &self,
        deploy: &DeployRow,
        cancel: &CancellationToken,
    ) -> Result<Option<Ready>, StepError> {
        let app = &self
            .store
            .get_app(&deploy.app)?
            .ok_or_else(|| StepError::internal(format!("the App `{}` was deleted", deploy.app)))?;
        let serving = self
            .serving(app)
            .map_err(|e| StepError::internal(e.to_string()))?;
        let rows = self.store.replicas(&serving.id)?;
        if rows.is_empty() {
            return Err(StepError::internal(
                "the serving deploy has no container to restart",
            ));
        }
        // The same bytes keep serving: the deploy pins them as every other
        // deploy does, so the App still shows its digest and this deploy
        // stays a rollback target.
        if let Some(digest) = &serving.digest {
            self.store.set_deploy_digest(&deploy.id, digest)?;
        }
        self.store.advance(
            &deploy.id,
            DeployStatus::Starting,
            &format!(
                "hard restart: stopping and starting {} {} in place",
                if rows.len() == 1 {
                    "container"
                } else {
                    "containers"
                },
                list_short(&rows)
            ),
        )?;
        let many = rows.len() > 1;
        let mut set: BTreeMap<u32, ReplicaRow> =
            rows.iter().map(|r| (r.replica, r.clone())).collect();
        let mut done = Vec::new();
        for (step, row) in rows.iter().enumerate() {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            let who = if many {
                format!("replica {}: ", row.replica)
            } else {
                String::new()
            };
            if many {
                let others: Vec<&ReplicaRow> =
                    set.values().filter(|r| r.replica != row.replica).collect();
                self.route_to(app, others).await?;
                self.drain(app, row, &deploy.id, "old").await;
            }
            self.runtime
                .stop(&row.container_id, STOP_TIMEOUT_SECS)
                .await?;
            self.runtime.start_existing(&row.container_id).await?;
            self.store.put_replica(&ReplicaRow {
                deploy_id: deploy.id.clone(),
                addr: None,
                ..row.clone()
            })?;
            if step == 0 {
                self.store.advance(
                    &deploy.id,
                    DeployStatus::HealthChecking,
                    &health_message(app),
                )?;
            }
            let addr = self
                .check_replica(
                    deploy,
                    app,
                    &ReplicaRow {
                        deploy_id: deploy.id.clone(),
                        ..row.clone()
                    },
                    &who,
                )
                .await?;
            let back = ReplicaRow {
                deploy_id: deploy.id.clone(),
                addr: Some(addr),
                ..row.clone()
            };
            set.insert(row.replica, back.clone());
            if many {
                self.route_to(app, set.values()).await?;
            }
            done.push(back);
        }
        Ok(Some(Ready {
            app: app.clone(),
            digest: serving.digest,
            keep: Vec::new(),
            fresh: done,
            retire: Vec::new(),
        }))
    }
}
