//! Requests that start deploys: each is validated and recorded, the App is
//! claimed, and the deploy is spawned.

use super::settings::SettingsChange;
use super::*;
use crate::store::AppSettings;

impl Deployer {
    /// Validates a create request, runs the registry preflight, records the
    /// App with its first deploy and starts that deploy. Nothing is stored
    /// when a check fails. With `from`, the new App copies that App's
    /// configuration (a template) and runs its serving digest.
    pub async fn create_app(
        self: &Arc<Self>,
        req: CreateAppRequest,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        let name = AppName::parse(&req.name)
            .map_err(|e| DeployError::invalid("invalid_name", e.to_string()))?;
        let template = match &req.from {
            Some(from) => Some(self.template(from, req.with_secrets, name.as_str())?),
            None => None,
        };
        let (base, mut env, template_image) = match template {
            Some((app, env, image)) => (Some(app), env, Some(image)),
            None => (None, Vec::new(), None),
        };
        let image_raw = if !req.image.is_empty() {
            req.image.clone()
        } else if let Some(image) = template_image {
            image
        } else {
            return Err(DeployError::invalid(
                "invalid_image",
                "an image is required: give --image REF (or --from APP to copy an App)",
            ));
        };
        let image = ImageRef::parse(&image_raw)
            .map_err(|e| DeployError::invalid("invalid_image", e.to_string()))?;
        if req.port == 0 && base.is_none() {
            return Err(DeployError::invalid("invalid_port", "a port is required: give --port PORT, the port the App listens on inside its container"));
        }
        // The template's settings (its domains are not copied) or the
        // defaults, with what the request gives: the rules `apps update`
        // checks too.
        let mut settings = AppSettings::of(base.as_ref().unwrap_or(&AppRow::named(name.as_str())));
        settings.domains = Vec::new();
        SettingsChange::of_create(&req).apply(&mut settings)?;
        for d in &req.domains {
            if let Some(d) = self.domain_for(name.as_str(), d)? {
                if !settings.domains.contains(&d) {
                    settings.domains.push(d);
                }
            }
        }
        // Its own `NAME.localhost` must not already route to another App.
        let own = name.default_domain();
        if let Some(owner) = self.domain_owner(&own)?.filter(|o| o != name.as_str()) {
            return Err(DeployError::invalid(
                "name_domain_taken",
                format!("the App `{owner}` already answers on {own}, the host name every App named `{name}` gets: pick another name"),
            ));
        }
        for raw in &req.env {
            let (key, value) = molt_core::env::parse_assignment(raw)
                .map_err(|e| DeployError::invalid("invalid_env", e))?;
            env.retain(|e| e.key != key);
            env.push(EnvEntry {
                key,
                secret: false,
                value: Some(value),
                sealed: None,
            });
        }
        if self.store.get_app(name.as_str())?.is_some() {
            return Err(DeployError::Conflict {
                message: format!("an App named `{name}` already exists: pick another name, or deploy to it with `molt deploy {name} IMAGE`"),
                deploy_id: None,
            });
        }

        let confinement =
            crate::confine::Confinement::of(&self.store, &req, name.as_str(), base.as_ref())
                .map_err(|(code, e)| DeployError::invalid(code, e))?;

        let needed = settings.apply_to(&AppRow::named(name.as_str()));
        capacity::choose(&needed, false, self.in_use()?, self.capacity)
            .map_err(|e| DeployError::invalid("insufficient_resources", e))?;

        let cred = self.credential(&image.registry)?;
        self.registries.preflight(&image, cred.as_ref()).await?;

        let at = now();
        let app = AppRow {
            name: name.to_string(),
            status: AppStatus::Creating,
            image: image.to_string(),
            port: settings.port,
            health: settings.health,
            domains: settings.domains,
            replicas: settings.replicas,
            strategy: settings.strategy,
            memory_bytes: settings.memory_bytes,
            cpus: settings.cpus,
            gpus: settings.gpus,
            drain_timeout_secs: settings.drain_timeout_secs,
            upstream_timeout_secs: settings.upstream_timeout_secs,
            https_redirect: settings.https_redirect,
            hsts_max_age_secs: settings.hsts_max_age_secs,
            max_body_bytes: settings.max_body_bytes,
            tunnel_idle_timeout_secs: settings.tunnel_idle_timeout_secs,
            constraints: settings.constraints,
            links: confinement.links,
            cap_add: confinement.cap_add,
            pids_limit: confinement.pids_limit,
            read_only: req.read_only || base.as_ref().is_some_and(|b| b.read_only),
            current_deploy: None,
            created_at: at.clone(),
            updated_at: at.clone(),
        };
        let mut deploy = new_deploy(
            &app.name,
            DeployKind::Create,
            &image.to_string(),
            triggered_by,
            None,
            None,
        );
        deploy.env = env.clone();
        deploy.replicas = app.replicas;
        deploy.strategy = Some("bluegreen".into());
        deploy.config = Some(AppSettings::of(&app));
        let cancel = self.claim(&app.name, &deploy.id)?;
        // Checked again under the reservation lock: another App may have
        // taken a domain since the check above.
        if let Err(e) = self.reserve_domains(&app.name, &app.domains) {
            self.release(&app.name);
            return Err(e);
        }
        if let Err(e) = self.store.create_app(&app, &env, &deploy) {
            self.release(&app.name);
            return Err(e.into());
        }
        let plan = Plan {
            strategy: Some(Strategy::BlueGreen),
            replicas: app.replicas,
            ..Plan::new(image.digest.clone())
        };
        self.spawn(deploy.clone(), plan, cancel);
        Ok((app, deploy))
    }

    /// The configuration to copy from `from`: the App, its environment
    /// (secrets re-sealed for the new App, or left out), and its serving
    /// image pinned by digest.
    pub(super) fn template(
        &self,
        from: &str,
        with_secrets: bool,
        new_name: &str,
    ) -> Result<(AppRow, Vec<EnvEntry>, String), DeployError> {
        let source = self.store.get_app(from)?.ok_or_else(|| {
            DeployError::NotFound(format!(
                "no App named `{from}` to copy: see `molt apps list`"
            ))
        })?;
        let mut env = Vec::new();
        for e in self.store.env(from)? {
            if !e.secret {
                env.push(e);
            } else if with_secrets {
                let sealed = e.sealed.as_deref().unwrap_or_default();
                let plain = self.sealer.open(&env_purpose(from, &e.key), sealed)?;
                let sealed = self.sealer.seal(&env_purpose(new_name, &e.key), &plain)?;
                env.push(EnvEntry {
                    sealed: Some(sealed),
                    ..e
                });
            }
        }
        let current = match &source.current_deploy {
            Some(id) => self.store.get_deploy(id)?,
            None => None,
        };
        let image = match current.and_then(|d| d.digest.map(|digest| (d.image, digest))) {
            Some((image, digest)) => ImageRef::parse(&image)
                .map(|r| r.with_digest(&digest).to_string())
                .unwrap_or(source.image.clone()),
            None => source.image.clone(),
        };
        Ok((source, env, image))
    }

    /// What every serving container of this installation reserves.
    pub(super) fn in_use(&self) -> anyhow::Result<Need> {
        let mut total = Need::default();
        for app in self.store.list_apps()? {
            if app.current_deploy.is_some() {
                let n = Need::of(&app);
                total.memory_bytes += n.memory_bytes * app.replicas as u64;
                total.gpus += n.gpus * app.replicas;
            }
        }
        Ok(total)
    }

    /// Changes how many containers serve an App, with no downtime: new
    /// containers of the serving digest (with the serving deploy's
    /// environment, so every replica runs the same) are health-checked and
    /// added to the route; replicas beyond the count leave the route first,
    /// drain, then stop and go. Recorded as a `scale` deploy.
    pub async fn scale(
        self: &Arc<Self>,
        app: &str,
        replicas: u32,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        let app = self.find_app(app)?;
        if !(1..=100).contains(&replicas) {
            return Err(DeployError::invalid(
                "invalid_replicas",
                "replicas must be between 1 and 100",
            ));
        }
        let serving = self.serving(&app)?;
        if replicas == app.replicas {
            return Err(DeployError::invalid(
                "replicas_unchanged",
                format!("the App `{}` already runs {replicas} replica(s)", app.name),
            ));
        }
        if replicas > app.replicas {
            capacity::fits(&app, replicas, self.in_use()?, self.capacity)
                .map_err(|e| DeployError::invalid("insufficient_resources", e))?;
        }
        let from = app.replicas;
        let plan = Plan {
            strategy: Some(Strategy::BlueGreen),
            replicas,
            only: Some(Vec::new()),
            ..Plan::new(serving.digest.clone())
        };
        let (app, deploy) = self
            .begin(
                app,
                DeployKind::Scale,
                serving.image.clone(),
                plan,
                serving.env.clone(),
                triggered_by,
            )
            .await?;
        let _ = self.store.event(
            &deploy.id,
            &format!("scaling from {from} to {replicas} replica(s)"),
        );
        Ok((app, deploy))
    }

    /// Replaces one replica of an App beside the others (autoheal): a fresh
    /// container of the serving digest and environment is health-checked and
    /// takes the sick one's place, which then drains and goes. When the host
    /// has no room for one container more, the whole App restarts through
    /// its strategy instead.
    pub async fn replace_replica(
        self: &Arc<Self>,
        app: &str,
        replica: u32,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        let app = self.find_app(app)?;
        let serving = self.serving(&app)?;
        if capacity::fits(&app, app.replicas + 1, self.in_use()?, self.capacity).is_err() {
            return self.restart(&app.name, false, triggered_by).await;
        }
        let plan = Plan {
            strategy: Some(Strategy::BlueGreen),
            only: Some(vec![replica]),
            ..Plan::new(serving.digest.clone())
        };
        let (app, deploy) = self
            .begin(
                app,
                DeployKind::Restart,
                serving.image.clone(),
                plan,
                serving.env.clone(),
                triggered_by,
            )
            .await?;
        let _ = self
            .store
            .event(&deploy.id, &format!("replacing replica {replica}"));
        Ok((app, deploy))
    }

    /// Starts a deploy of `image` to an existing App.
    pub async fn deploy(
        self: &Arc<Self>,
        app: &str,
        image: &str,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        let app = self.find_app(app)?;
        let image = ImageRef::parse(image)
            .map_err(|e| DeployError::invalid("invalid_image", e.to_string()))?;
        let env = self.store.env(&app.name)?;
        let plan = Plan::new(image.digest.clone());
        self.begin(
            app,
            DeployKind::Deploy,
            image.to_string(),
            plan,
            env,
            triggered_by,
        )
        .await
    }

    /// Runs exactly a built release (`molt releases promote`) through the
    /// health-checked swap: its image from this host, with the App's
    /// settings and environment as they are now (changes made since the
    /// build go into the promoted release).
    pub async fn promote(
        self: &Arc<Self>,
        app: &str,
        release: &str,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        let app = self.find_app(app)?;
        let r = self
            .store
            .get_release(release)?
            .filter(|r| r.app == app.name)
            .ok_or_else(|| {
                DeployError::NotFound(format!(
                    "the App `{}` has no release `{}`: see `molt releases {}`",
                    app.name,
                    release.chars().take(40).collect::<String>(),
                    app.name
                ))
            })?;
        let env = self.store.env(&app.name)?;
        let plan = Plan::new(Some(r.digest.clone()));
        let (app, deploy) = self
            .begin_with_release(
                app,
                DeployKind::Deploy,
                r.image.clone(),
                plan,
                env,
                triggered_by,
                Some(r.id.clone()),
            )
            .await?;
        let _ = self.store.event(
            &deploy.id,
            &format!(
                "promoting release {}{}",
                r.id,
                r.build
                    .as_ref()
                    .map(|b| format!(" (build {b})"))
                    .unwrap_or_default()
            ),
        );
        Ok((app, deploy))
    }

    /// Pulls the App's reference again (a new build pushed to the same tag)
    /// and swaps to it.
    pub async fn redeploy(
        self: &Arc<Self>,
        app: &str,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        let app = self.find_app(app)?;
        let env = self.store.env(&app.name)?;
        let image = app.image.clone();
        let plan = Plan::new(None);
        self.begin(app, DeployKind::Redeploy, image, plan, env, triggered_by)
            .await
    }

    /// Starts a fresh container of the serving digest, from the image on
    /// this host (no pull); `hard` restarts the serving container in place.
    pub async fn restart(
        self: &Arc<Self>,
        app: &str,
        hard: bool,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        let app = self.find_app(app)?;
        let serving = self.serving(&app)?;
        let env = self.store.env(&app.name)?;
        let plan = Plan {
            hard,
            ..Plan::new(serving.digest.clone())
        };
        self.begin(
            app,
            DeployKind::Restart,
            serving.image.clone(),
            plan,
            env,
            triggered_by,
        )
        .await
    }

    /// Swaps to the serving digest with the App's current environment.
    pub async fn apply_config(
        self: &Arc<Self>,
        app: &str,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        let app = self.find_app(app)?;
        let serving = self.serving(&app)?;
        let env = self.store.env(&app.name)?;
        let plan = Plan::new(serving.digest.clone());
        self.begin(
            app,
            DeployKind::Config,
            serving.image.clone(),
            plan,
            env,
            triggered_by,
        )
        .await
    }

    /// Returns to the digest of an earlier succeeded deploy (by default the
    /// one before the serving one), with its environment if `with_config`.
    pub async fn rollback(
        self: &Arc<Self>,
        app: &str,
        target: Option<&str>,
        with_config: bool,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        let app = self.find_app(app)?;
        let history = self.store.list_deploys(&app.name)?;
        let target = match target {
            Some(id) => {
                let d = history.iter().find(|d| d.id == id).ok_or_else(|| {
                    DeployError::NotFound(format!(
                        "the App `{}` has no deploy `{id}`: see `molt deploys {}`",
                        app.name, app.name
                    ))
                })?;
                if d.status != DeployStatus::Succeeded {
                    return Err(DeployError::invalid(
                        "rollback_target_not_succeeded",
                        format!(
                            "deploy {id} {}; only a succeeded deploy can be rolled back to",
                            match d.status {
                                DeployStatus::Failed => "failed".to_string(),
                                DeployStatus::Canceled => "was canceled".to_string(),
                                s => format!("is still {s}"),
                            }
                        ),
                    ));
                }
                d.clone()
            }
            None => history
                .iter()
                .filter(|d| {
                    d.status == DeployStatus::Succeeded
                        && d.kind.is_version()
                        && Some(&d.id) != app.current_deploy.as_ref()
                })
                .find(|d| d.digest.is_some())
                .cloned()
                .ok_or_else(|| {
                    DeployError::invalid(
                        "no_rollback_target",
                        format!(
                            "the App `{}` has no earlier succeeded deploy to roll back to",
                            app.name
                        ),
                    )
                })?,
        };
        let digest = target.digest.clone().ok_or_else(|| {
            DeployError::invalid(
                "rollback_target_without_digest",
                format!(
                    "deploy {} recorded no digest, so its exact image cannot be run again",
                    target.id
                ),
            )
        })?;
        let pinned = ImageRef::parse(&target.image)
            .map_err(|e| DeployError::invalid("invalid_image", e.to_string()))?
            .with_digest(&digest);
        let env = if with_config {
            target.env.clone()
        } else {
            self.store.env(&app.name)?
        };
        let mut plan = Plan {
            restore_env: with_config,
            ..Plan::new(Some(digest))
        };
        if with_config {
            self.restore_settings(&app, &target, &mut plan)?;
        }
        let (app, mut deploy) = self
            .begin(
                app,
                DeployKind::Rollback,
                pinned.to_string(),
                plan,
                env,
                triggered_by,
            )
            .await?;
        let _ = self.store.event(
            &deploy.id,
            &format!("rolling back to deploy {} ({})", target.id, target.image),
        );
        deploy.image = pinned.to_string();
        Ok((app, deploy))
    }

    /// With `--with-config`, a rollback also brings the target's settings
    /// (the App's replica count stays: scaling is not configuration),
    /// which the App takes with the swap as an `apps update` would. Its
    /// domains must still be free, and when containers must change it
    /// runs through the strategy the host's room allows.
    fn restore_settings(
        &self,
        app: &AppRow,
        target: &DeployRow,
        plan: &mut Plan,
    ) -> Result<(), DeployError> {
        let Some(mut settings) = target.config.clone() else {
            // Recorded before releases: only its environment is known.
            return Ok(());
        };
        let current = AppSettings::of(app);
        settings.replicas = current.replicas;
        if settings == current {
            return Ok(());
        }
        for d in &settings.domains {
            if let Some(owner) = self.domain_owner(d)?.filter(|o| *o != app.name) {
                return Err(DeployError::invalid(
                    "domain_taken",
                    format!(
                        "deploy {} routed {d}, which cannot be restored: {}; or roll back without --with-config",
                        target.id,
                        super::settings::domain_taken_message(d, &owner)
                    ),
                ));
            }
        }
        if super::settings::needs_new_containers(&current, &settings) {
            let wanted = settings.apply_to(app);
            plan.strategy = Some(
                capacity::choose_change(Some(app), &wanted, self.in_use()?, self.capacity)
                    .map_err(|e| DeployError::invalid("insufficient_resources", e))?,
            );
        }
        plan.settings = Some(settings);
        Ok(())
    }

    pub(super) async fn begin(
        self: &Arc<Self>,
        app: AppRow,
        kind: DeployKind,
        image: String,
        plan: Plan,
        env: Vec<EnvEntry>,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        self.begin_with_release(app, kind, image, plan, env, triggered_by, None)
            .await
    }

    /// [`Self::begin`] for a deploy that promotes the built release
    /// `release`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn begin_with_release(
        self: &Arc<Self>,
        app: AppRow,
        kind: DeployKind,
        image: String,
        mut plan: Plan,
        env: Vec<EnvEntry>,
        triggered_by: &str,
        release: Option<String>,
    ) -> Result<(AppRow, DeployRow), DeployError> {
        if plan.strategy.is_none() {
            plan.strategy = Some(
                capacity::choose(
                    &app,
                    app.current_deploy.is_some(),
                    self.in_use()?,
                    self.capacity,
                )
                .map_err(|e| DeployError::invalid("insufficient_resources", e))?,
            );
        }
        if plan.replicas == 0 {
            plan.replicas = app.replicas.max(1);
        }
        let previous = match &app.current_deploy {
            Some(id) => self.store.get_deploy(id)?,
            None => None,
        };
        let mut deploy = new_deploy(
            &app.name,
            kind,
            &image,
            triggered_by,
            previous.as_ref().map(|p| p.id.clone()),
            previous.and_then(|p| p.digest),
        );
        deploy.env = env;
        deploy.replicas = plan.replicas;
        deploy.strategy = Some(plan.strategy_name().to_string());
        deploy.settings = plan.settings.clone();
        // The release it runs: the settings it brings, or the App's.
        let mut config = plan
            .settings
            .clone()
            .unwrap_or_else(|| AppSettings::of(&app));
        config.replicas = plan.replicas;
        deploy.config = Some(config);
        deploy.release = release;
        let cancel = self.claim_patiently(&app.name, &deploy.id).await?;
        // The domains a settings change adds are reserved for the App until
        // the deploy ends: another App's request for one is refused even
        // before this swap records it.
        let added: Vec<String> = plan
            .settings
            .iter()
            .flat_map(|s| s.domains.iter())
            .filter(|d| !app.domains.contains(d))
            .cloned()
            .collect();
        if let Err(e) = self.reserve_domains(&app.name, &added) {
            self.release(&app.name);
            return Err(e);
        }
        if let Err(e) = self.store.start_deploy(&deploy) {
            self.release(&app.name);
            return Err(e.into());
        }
        self.spawn(deploy.clone(), plan, cancel);
        let app = self.store.get_app(&app.name)?.unwrap_or(app);
        Ok((app, deploy))
    }

    /// Sets and unsets variables; applied on the next deploy, or at once
    /// with `apply` (a `config` deploy of the serving digest).
    pub async fn change_env(
        self: &Arc<Self>,
        app: &str,
        set: Vec<(String, String, bool)>,
        unset: Vec<String>,
        apply: bool,
        triggered_by: &str,
    ) -> Result<Option<DeployRow>, DeployError> {
        let app = self.find_app(app)?;
        let mut entries = Vec::new();
        for (key, value, secret) in set {
            molt_core::env::validate_key(&key)
                .map_err(|e| DeployError::invalid("invalid_env", e))?;
            molt_core::env::validate_value(&key, &value)
                .map_err(|e| DeployError::invalid("invalid_env", e))?;
            if key == "PORT" {
                return Err(DeployError::invalid(
                    "invalid_env",
                    "PORT is set by Molt to the App's port; change the port instead",
                ));
            }
            entries.push(if secret {
                EnvEntry {
                    sealed: Some(
                        self.sealer
                            .seal(&env_purpose(&app.name, &key), value.as_bytes())?,
                    ),
                    key,
                    secret: true,
                    value: None,
                }
            } else {
                EnvEntry {
                    key,
                    secret: false,
                    value: Some(value),
                    sealed: None,
                }
            });
        }
        for key in &unset {
            molt_core::env::validate_key(key)
                .map_err(|e| DeployError::invalid("invalid_env", e))?;
        }
        // A key that is not set is a typo more often than not: say so
        // rather than report a change that changed nothing.
        let stored = self.store.env(&app.name)?;
        let missing: Vec<&str> = unset
            .iter()
            .filter(|k| !stored.iter().any(|e| e.key == **k))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(DeployError::invalid(
                "unknown_env",
                format!(
                    "the App `{}` has no variable {}; nothing was changed (see `molt env list {}`)",
                    app.name,
                    missing.join(", "),
                    app.name
                ),
            ));
        }
        if apply {
            // Refuse before changing anything when a deploy is running.
            if let Some(running) = self.in_progress(&app.name) {
                return Err(DeployError::Conflict {
                    message: format!("the App `{}` is busy with deploy {running}; wait for it to finish or cancel it with `molt cancel {}`", app.name, app.name),
                    deploy_id: Some(running),
                });
            }
            self.serving(&app)?;
        }
        self.store.change_env(&app.name, &entries, &unset)?;
        if apply {
            let (_, deploy) = self.apply_config(&app.name, triggered_by).await?;
            return Ok(Some(deploy));
        }
        Ok(None)
    }

    /// Deletes an App: cancels any deploy in progress, then removes its
    /// route, its containers, its environment and history, and the App.
    pub async fn delete_app(&self, name: &str) -> Result<(), DeployError> {
        self.find_app(name)?;
        if let Some(active) = self.active().get(name) {
            active.cancel.cancel();
        }
        // Wait (bounded) for a canceled deploy to tear down its container.
        let deadline = Instant::now() + Duration::from_secs(60);
        let _cancel = loop {
            match self.claim(name, "delete") {
                Ok(token) => break token,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let result = async {
            self.store.set_app_status(name, AppStatus::Deleting)?;
            self.proxy.remove_route(name).await?;
            for c in self.runtime.list(Some(name)).await? {
                self.runtime.stop(&c.id, STOP_TIMEOUT_SECS).await?;
                self.runtime.remove(&c.id).await?;
            }
            self.runtime.forget_app(name).await;
            // Its built images (`molt build`) go with it.
            for r in self.store.list_releases(name)? {
                if let Err(e) = self.runtime.remove_image(&r.image).await {
                    tracing::warn!(app = name, image = %r.image, error = %format!("{e:#}"), "a built image of a deleted App could not be removed");
                }
            }
            self.store.delete_app(name)?;
            Ok::<(), anyhow::Error>(())
        }
        .await;
        self.release(name);
        result.map_err(DeployError::Internal)
    }
}

pub(super) fn new_deploy(
    app: &str,
    kind: DeployKind,
    image: &str,
    triggered_by: &str,
    previous_deploy: Option<String>,
    previous_digest: Option<String>,
) -> DeployRow {
    DeployRow {
        id: crate::datadir::random_hex(5),
        app: app.to_string(),
        kind,
        image: image.to_string(),
        digest: None,
        status: DeployStatus::Pending,
        error: None,
        triggered_by: triggered_by.to_string(),
        previous_deploy,
        previous_digest,
        replicas: 1,
        env: Vec::new(),
        failure: None,
        strategy: None,
        phase: None,
        settings: None,
        config: None,
        release: None,
        created_at: now(),
        finished_at: None,
    }
}
