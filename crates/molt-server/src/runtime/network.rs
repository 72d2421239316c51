//! Molt's Docker networks: the shared bridge network and one network per
//! App, created once even when servers or replicas ask at the same moment.

use super::*;

impl Runtime {
    /// The network of one App: its containers join it (and the networks
    /// of the Apps it links to) instead of one network shared by all Apps,
    /// so an App reaches no other App unless linked. The instance id keeps
    /// installations that share an engine apart.
    pub fn app_network(&self, app: &str) -> String {
        format!("{}-app-{app}-{}", self.network, self.instance)
    }

    /// Creates an App's network unless it exists.
    pub(super) async fn ensure_app_network(&self, app: &str) -> Result<String> {
        let name = self.app_network(app);
        let labels = HashMap::from([
            ("molt.network".into(), "true".into()),
            (LABEL_INSTANCE.into(), self.instance.clone()),
            (LABEL_APP.into(), app.to_string()),
        ]);
        self.ensure_named_network(&name, labels)
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot create the Docker network `{name}` of the App `{app}`: {}; check `docker network ls` and the engine's address pools",
                    engine_message(&e)
                )
            })?;
        Ok(name)
    }

    /// Creates the bridge network `name` unless it exists. Engines before
    /// API 1.44 accept a second network of a name, and a name that two
    /// networks share can no longer be used (every later look-up is
    /// "ambiguous"). So when two servers, or two replicas, create it at the
    /// same moment, each then keeps the oldest of that name and removes the
    /// others; the engine refuses to remove one that is in use.
    pub(super) async fn ensure_named_network(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> std::result::Result<(), bollard::errors::Error> {
        if self.networks_named(name).await?.is_empty() {
            let created = self
                .docker
                .create_network(NetworkCreateRequest {
                    name: name.to_string(),
                    driver: Some("bridge".into()),
                    labels: Some(labels),
                    ..Default::default()
                })
                .await;
            if let Err(e) = created {
                if self.networks_named(name).await?.is_empty() {
                    return Err(e);
                }
            }
        }
        let found = self.networks_named(name).await?;
        for extra in found.iter().skip(1) {
            match self.docker.remove_network(extra).await {
                Ok(()) => {
                    tracing::info!(network = %name, id = %extra, "removed a second network of the same name")
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(network = %name, id = %extra, "two networks share this name: {}", engine_message(&e))
                }
            }
        }
        Ok(())
    }

    /// The ids of the networks called exactly `name` (the engine's filter
    /// matches parts of names too), oldest first.
    pub(super) async fn networks_named(
        &self,
        name: &str,
    ) -> std::result::Result<Vec<String>, bollard::errors::Error> {
        let options = bollard::query_parameters::ListNetworksOptions {
            filters: Some(HashMap::from([(
                "name".to_string(),
                vec![name.to_string()],
            )])),
        };
        let mut found: Vec<_> = self
            .docker
            .list_networks(Some(options))
            .await?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| Some((n.created, n.id?)))
            .collect();
        found.sort();
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

    /// Removes a deleted App's network; one still used (by the containers
    /// of an App linked to it) stays until the engine can remove it.
    pub async fn forget_app(&self, app: &str) {
        let name = self.app_network(app);
        if let Err(e) = self.docker.remove_network(&name).await {
            if !is_not_found(&e) {
                tracing::info!(network = %name, "kept the network of a deleted App: {}", engine_message(&e));
            }
        }
    }

    /// Creates Molt's bridge network unless it exists.
    pub async fn ensure_network(&self) -> Result<()> {
        let labels = HashMap::from([("molt.network".into(), "true".into())]);
        self.ensure_named_network(&self.network, labels)
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot create the Docker network `{}`: {}; check `docker network ls` and the engine's address pools",
                    self.network,
                    engine_message(&e)
                )
            })
    }
}
