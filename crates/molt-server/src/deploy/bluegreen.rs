//! Blue-green: the whole new set starts beside the serving one and takes
//! the traffic in one swap (a scale and a replica replacement are this too,
//! starting only some containers).

use super::*;

/// What `prepare` hands to `commit`: the new set, healthy.
pub(super) struct Ready {
    pub(super) app: AppRow,
    pub(super) digest: Option<String>,
    /// Serving containers that stay in the set.
    pub(super) keep: Vec<ReplicaRow>,
    /// New (or, for a hard restart, restarted) containers, with addresses.
    pub(super) fresh: Vec<ReplicaRow>,
    /// Serving containers that leave once the new set serves.
    pub(super) retire: Vec<ReplicaRow>,
}

impl Deployer {
    /// Everything before a blue-green swap: pull, start the new containers
    /// beside the serving set, health-check them all. A scale or a replica
    /// replacement starts only some and keeps the others.
    pub(super) async fn prepare(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        new_containers: &mut Vec<String>,
    ) -> Result<Ready, StepError> {
        let app = self.app_for(deploy)?;
        let image = ImageRef::parse(&deploy.image)?;
        let serving = self.serving_rows(&app)?;
        let plan_layout = layout(&serving, plan.replicas, plan.only.as_deref());
        self.adopt_kept(deploy, &plan_layout.keep)?;
        let mut fresh = Vec::new();
        let digest = if plan_layout.start.is_empty() {
            if let Some(d) = &plan.digest {
                self.store.set_deploy_digest(&deploy.id, d)?;
            }
            plan.digest.clone()
        } else {
            let (run_ref, digest) = self.fetch(deploy, plan, &image).await?;
            let names: Vec<String> = plan_layout
                .start
                .iter()
                .map(|i| container_name(&app.name, &deploy.id, *i))
                .collect();
            self.store.advance(
                &deploy.id,
                DeployStatus::Starting,
                &format!(
                    "starting {}{}",
                    if names.len() == 1 {
                        "container "
                    } else {
                        "containers "
                    },
                    names.join(", ")
                ),
            )?;
            for &i in &plan_layout.start {
                fresh.push(
                    self.start_replica(deploy, &app, &run_ref, i, new_containers)
                        .await?,
                );
            }
            self.check_all(deploy, &app, &mut fresh).await?;
            digest
        };
        Ok(Ready {
            app,
            digest,
            keep: plan_layout.keep,
            fresh,
            retire: plan_layout.retire,
        })
    }

    /// The swap and what follows it: the route gets the new set (the kept
    /// containers and the fresh ones) in one store, the database records it,
    /// and the retired containers drain and go.
    pub(super) async fn commit(&self, deploy: &DeployRow, plan: &Plan, ready: Ready) -> Outcome {
        let Ready {
            app,
            digest,
            keep,
            fresh,
            retire,
        } = ready;
        let set: Vec<&ReplicaRow> = keep.iter().chain(fresh.iter()).collect();
        let (swapping, swapped) = if fresh.is_empty() && retire.is_empty() {
            (
                "moving the route to the new settings".to_string(),
                "the route took the new settings; the serving containers stay".to_string(),
            )
        } else if fresh.is_empty() {
            (
                format!("taking {} out of the route", describe_replicas(&retire)),
                format!("{} left the route", describe_replicas(&retire)),
            )
        } else if !keep.is_empty() && !retire.is_empty() {
            (
                format!(
                    "swapping {} for a new container beside the others",
                    describe_replicas(&retire)
                ),
                format!(
                    "{} switched to {}",
                    describe_replicas(&fresh),
                    describe_containers(&fresh)
                ),
            )
        } else if !keep.is_empty() {
            (
                format!("adding {} to the route", describe_replicas(&fresh)),
                format!(
                    "{} serve{} beside the others",
                    describe_containers(&fresh),
                    if fresh.len() == 1 { "s" } else { "" }
                ),
            )
        } else if fresh.len() == 1 {
            (
                "switching traffic to the new container".to_string(),
                format!("traffic switched to {}", describe_containers(&fresh)),
            )
        } else {
            (
                format!("switching traffic to the {} new containers", fresh.len()),
                format!("traffic switched to {}", describe_containers(&fresh)),
            )
        };
        if let Err(e) = self
            .store
            .advance(&deploy.id, DeployStatus::Swapping, &swapping)
        {
            return Outcome::Failed(Failure::internal(e.to_string()));
        }
        let digest = digest.as_deref().map(short_digest).unwrap_or(&deploy.image);
        let summary = if deploy.kind == DeployKind::Scale {
            format!(
                "scaled {} to {} replica(s) of {digest}",
                app.name, deploy.replicas
            )
        } else {
            format!(
                "deploy succeeded: {digest} serves {}{}",
                app.name,
                on_replicas(deploy.replicas)
            )
        };
        let retire = if plan.hard { Vec::new() } else { retire };
        let pending = Unrecorded {
            deploy_id: deploy.id.clone(),
            image: followed_image(deploy, &app),
            message: swapped,
            summary: summary.clone(),
            retire: retire.clone(),
        };
        match self.cut_over(deploy, &app, set, false, pending).await {
            Ok(()) => {}
            Err(CutoverError::Refused(f)) => return Outcome::Failed(f),
            Err(CutoverError::Unrecorded(f)) => return Outcome::Unrecorded(f),
        }
        // From here on the new set serves: nothing below fails the deploy.
        self.retire(&app, &retire, &deploy.id).await;
        Outcome::Succeeded(summary)
    }
}
