//! The steps every strategy shares: get the image, start a replica, check
//! it, bring an old one back, drain and retire.

use super::*;

/// What `fetch` says will run: the reference to start (`repo@digest` when
/// known) and the digest.
pub(super) type Fetched = (String, Option<String>);

impl Deployer {
    /// The App, the serving deploy and its containers, and the image on the
    /// host: what a recreate or a rolling deploy needs before it touches the
    /// serving set; or how the deploy ends when that fails or is canceled.
    pub(super) async fn setup(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        cancel: &CancellationToken,
    ) -> Result<(AppRow, DeployRow, Vec<ReplicaRow>, Fetched), Outcome> {
        tokio::select! {
            r = self.set_up(deploy, plan) => r.map_err(|StepError(e)| Outcome::Failed(e)),
            _ = cancel.cancelled() => Err(Outcome::Canceled),
        }
    }

    /// The App as a deploy runs it: as stored, with the settings the
    /// deploy brings (a `config` deploy of `apps update`).
    pub(super) fn app_for(&self, deploy: &DeployRow) -> anyhow::Result<AppRow> {
        let app = self
            .store
            .get_app(&deploy.app)?
            .ok_or_else(|| anyhow::anyhow!("the App `{}` was deleted", deploy.app))?;
        Ok(match &deploy.settings {
            Some(settings) => settings.apply_to(&app),
            None => app,
        })
    }

    async fn set_up(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
    ) -> Result<(AppRow, DeployRow, Vec<ReplicaRow>, Fetched), StepError> {
        let app = self.app_for(deploy)?;
        let image = ImageRef::parse(&deploy.image)?;
        let old = self
            .serving(&app)
            .map_err(|e| StepError::internal(e.to_string()))?;
        let rows = self.store.replicas(&old.id)?;
        let fetched = self.fetch(deploy, plan, &image).await?;
        Ok((app, old, rows, fetched))
    }

    /// Pulls an image with its registry's credential. When the engine
    /// fails, the registry itself is asked why, so the failure's kind comes
    /// from a status code rather than from the engine's sentence.
    async fn pull(&self, image: &ImageRef) -> Result<(), StepError> {
        let cred = self.credential(&image.registry)?;
        let pair = cred.clone().map(|c| (c.username, c.password));
        let Err(e) = self.runtime.pull(image, pair).await else {
            return Ok(());
        };
        // The registry's own answer says what is wrong and what to do; the
        // engine's sentence only where the registry saw nothing wrong.
        let (kind, why) = match self.registries.preflight(image, cred.as_ref()).await {
            Err(RegistryError::NotFound { reason, .. }) => (
                FailureKind::ImageNotFound,
                format!("it was not found in its registry: {reason}; check the repository and tag, or push the image first"),
            ),
            Err(
                e @ (RegistryError::NeedsCredential { .. }
                | RegistryError::CredentialRefused { .. }),
            ) => (FailureKind::RegistryUnauthorized, e.to_string()),
            Err(e @ RegistryError::Unreachable { .. }) => {
                (FailureKind::RegistryUnreachable, e.to_string())
            }
            _ => (FailureKind::PullFailed, format!("{e:#}")),
        };
        Err(StepError::of(
            kind,
            format!("pulling {image} failed: {why}"),
        ))
    }

    /// Gets the image onto the host and says what exactly will run:
    /// `repo@digest` whenever the digest is known.
    pub(super) async fn fetch(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        image: &ImageRef,
    ) -> Result<Fetched, StepError> {
        if image.registry == crate::build::BUILT_REGISTRY {
            return self.built(deploy, plan, image).await;
        }
        if let Some(digest) = &plan.digest {
            let pinned = image.with_digest(digest);
            self.store.set_deploy_digest(&deploy.id, digest)?;
            if self.runtime.has_image(&pinned.to_string()).await {
                self.store.event(
                    &deploy.id,
                    &format!("using {pinned}, already on this host (no pull)"),
                )?;
                return Ok((pinned.to_string(), Some(digest.clone())));
            }
            if deploy.kind == DeployKind::Restart {
                return Err(StepError::of(FailureKind::ImageMissing, format!(
                    "the image {pinned} is no longer on this host, so it cannot be restarted without a pull: use `molt redeploy {}`",
                    deploy.app
                )));
            }
            self.store.advance(
                &deploy.id,
                DeployStatus::Pulling,
                &format!("pulling {pinned}"),
            )?;
            self.pull(&pinned).await?;
            self.store.event(&deploy.id, &format!("pulled {pinned}"))?;
            return Ok((pinned.to_string(), Some(digest.clone())));
        }
        self.store.advance(
            &deploy.id,
            DeployStatus::Pulling,
            &format!("pulling {image}"),
        )?;
        self.pull(image).await?;
        match self.runtime.image_digest(image).await? {
            Some(d) => {
                self.store.set_deploy_digest(&deploy.id, &d)?;
                let change = match &deploy.previous_digest {
                    Some(prev) if *prev == d => {
                        " (unchanged: the same digest as the serving version)"
                    }
                    Some(_) => " (changed: a new digest)",
                    None => "",
                };
                self.store
                    .event(&deploy.id, &format!("pulled {image}: {d}{change}"))?;
                Ok((image.with_digest(&d).to_string(), Some(d)))
            }
            None => {
                self.store.event(
                    &deploy.id,
                    &format!("pulled {image} (the engine reports no registry digest)"),
                )?;
                Ok((image.to_string(), None))
            }
        }
    }

    /// An image built on this host (`molt build`): never pulled, run by its
    /// id, which is its digest.
    async fn built(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        image: &ImageRef,
    ) -> Result<Fetched, StepError> {
        let Some(id) = &plan.digest else {
            return Err(StepError::of(FailureKind::ImageMissing, format!(
                "{image} was built on this host and cannot be pulled again: promote a release with `molt releases promote {}`, or build again with `molt build {}`",
                deploy.app, deploy.app
            )));
        };
        self.store.set_deploy_digest(&deploy.id, id)?;
        if !self.runtime.has_image(id).await {
            return Err(StepError::of(FailureKind::ImageMissing, format!(
                "the built image {image} ({id}) is no longer on this host: build it again with `molt build {}`",
                deploy.app
            )));
        }
        self.store.event(
            &deploy.id,
            &format!("using the built image {image} ({id}), on this host"),
        )?;
        Ok((id.clone(), Some(id.clone())))
    }

    /// Starts the container of one replica of a deploy and records it.
    pub(super) async fn start_replica(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        run_ref: &str,
        replica: u32,
        new_containers: &mut Vec<String>,
    ) -> Result<ReplicaRow, StepError> {
        let name = container_name(&app.name, &deploy.id, replica);
        let spec = ContainerSpec {
            name: name.clone(),
            image: run_ref.to_string(),
            app: app.name.clone(),
            deploy: deploy.id.clone(),
            replica,
            env: self.container_env(app, &deploy.env)?,
            memory_bytes: app.memory_bytes,
            cpus: app.cpus,
            gpus: app.gpus,
            port: app.port,
            links: app.links.clone(),
            cap_add: app.cap_add.clone(),
            pids_limit: crate::confine::pids_limit(app),
            read_only: app.read_only,
            constraints: app.constraints.clone(),
        };
        let runtime = Arc::clone(&self.runtime);
        let started = self
            .starts
            .run(&deploy.id, async move { runtime.start(&spec).await })
            .await;
        let id = started.map_err(
            |e| match e.downcast_ref::<crate::runtime::NoSuitableNode>() {
                Some(reason) => StepError::of(FailureKind::NoSuitableNode, reason.to_string()),
                None => StepError::internal(e.to_string()),
            },
        )?;
        new_containers.push(id.clone());
        let row = ReplicaRow {
            deploy_id: deploy.id.clone(),
            replica,
            container_id: id.clone(),
            container_name: name,
            addr: None,
        };
        self.store.put_replica(&row)?;
        self.store
            .set_replica_role(&deploy.id, replica, ReplicaRole::New)?;
        let who = if deploy.replicas > 1 {
            format!(" (replica {replica})")
        } else {
            String::new()
        };
        self.store.event(
            &deploy.id,
            &format!("container {} started{who}", short(&id)),
        )?;
        Ok(row)
    }

    /// Health-checks new containers together; fails with the first failure.
    pub(super) async fn check_all(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        rows: &mut [ReplicaRow],
    ) -> Result<(), StepError> {
        self.store.advance(
            &deploy.id,
            DeployStatus::HealthChecking,
            &health_message(app),
        )?;
        let many = rows.len() > 1;
        let checks = rows.iter().map(|row| {
            let who = if many {
                format!("replica {}: ", row.replica)
            } else {
                String::new()
            };
            async move { self.check_replica(deploy, app, row, &who).await }
        });
        let addrs = try_join_all(checks).await?;
        for (row, addr) in rows.iter_mut().zip(addrs) {
            row.addr = Some(addr);
        }
        Ok(())
    }

    /// Waits for a new container's address (recorded on its row) and health.
    pub(super) async fn check_replica(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        row: &ReplicaRow,
        who: &str,
    ) -> Result<String, StepError> {
        let addr = self.wait_for_address(&row.container_id, app.port).await?;
        self.store
            .set_replica_addr(&deploy.id, row.replica, &addr)?;
        let healthy = self
            .wait_healthy(deploy, &app.health, &row.container_id, &addr, who)
            .await?;
        self.store.event(&deploy.id, &format!("{who}{healthy}"))?;
        Ok(addr)
    }

    /// Starts a stopped serving container again and waits until it is
    /// healthy (at least 30 s: it served before); returns its address. It
    /// is checked with the settings it ran with, the App's as stored (a
    /// settings change is recorded only with its swap).
    pub(super) async fn bring_back(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        row: &ReplicaRow,
    ) -> Result<String, StepError> {
        let stored = self.store.get_app(&app.name)?;
        let app = stored.as_ref().unwrap_or(app);
        self.runtime.start_existing(&row.container_id).await?;
        let addr = self.wait_for_address(&row.container_id, app.port).await?;
        let health = HealthCheck {
            deploy_timeout_secs: app.health.deploy_timeout_secs.max(30),
            ..app.health.clone()
        };
        self.wait_healthy(deploy, &health, &row.container_id, &addr, "")
            .await?;
        Ok(addr)
    }

    /// Waits until the proxy reports a container out of the route drained
    /// (or cuts what is left at the drain timeout), recording how it went;
    /// `which` says whether it is an `old` one or a `new` one (a roll-back).
    pub(super) async fn drain(&self, app: &AppRow, row: &ReplicaRow, deploy_id: &str, which: &str) {
        let Some(addr) = &row.addr else {
            return;
        };
        let id = short(&row.container_id);
        let timeout = Duration::from_secs(app.drain_timeout_secs);
        let _ = self.store.event(
            deploy_id,
            &format!(
                "draining the {which} container {id} (up to {} s)",
                app.drain_timeout_secs
            ),
        );
        let message = match self.proxy.wait_drained(&app.name, addr, timeout).await {
            Ok((true, _)) => format!("the {which} container {id} drained"),
            Ok((false, closed)) => format!("drain timeout reached: closed {closed} connection(s) still open on the {which} container {id}"),
            Err(e) => format!("could not wait for the {which} container {id} to drain: {e:#}"),
        };
        let _ = self.store.event(deploy_id, &message);
    }

    /// Serving containers that stay in a deploy's set belong to its rows
    /// from the start, so its rows always describe the whole set it will
    /// serve with.
    pub(super) fn adopt_kept(&self, deploy: &DeployRow, keep: &[ReplicaRow]) -> anyhow::Result<()> {
        for row in keep {
            self.store.put_replica(&ReplicaRow {
                deploy_id: deploy.id.clone(),
                ..row.clone()
            })?;
            self.store
                .set_replica_role(&deploy.id, row.replica, ReplicaRole::Kept)?;
        }
        Ok(())
    }

    /// Removes old containers that were stopped and kept for a roll-back,
    /// once the new set is recorded as serving.
    pub(super) async fn remove_stopped(&self, deploy: &DeployRow, old: &[ReplicaRow]) {
        for row in old {
            let removed = self.runtime.remove(&row.container_id).await;
            let _ = self.store.event(&deploy.id, &match removed {
                Ok(()) => format!("removed the old container {}", short(&row.container_id)),
                Err(e) => format!("could not remove the old container {} ({e:#}); it will be removed at the next reconcile", short(&row.container_id)),
            });
        }
    }

    /// Drains containers that left the route (together), then stops and
    /// removes them.
    pub(super) async fn retire(&self, app: &AppRow, old: &[ReplicaRow], deploy_id: &str) {
        join_all(old.iter().map(|row| self.drain(app, row, deploy_id, "old"))).await;
        let removals = old.iter().map(|row| async move {
            let id = &row.container_id;
            let removed = async {
                self.runtime.stop(id, STOP_TIMEOUT_SECS).await?;
                self.runtime.remove(id).await
            }
            .await;
            let message = match removed {
                Ok(()) => format!("stopped and removed the old container {}", short(id)),
                Err(e) => format!("could not remove the old container {} ({e:#}); it will be removed at the next reconcile", short(id)),
            };
            let _ = self.store.event(deploy_id, &message);
        });
        join_all(removals).await;
    }
}
