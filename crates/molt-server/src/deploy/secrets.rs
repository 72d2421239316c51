//! Opening sealed values where they are needed: registry credentials for a
//! pull, and a container's environment.

use super::*;

impl Deployer {
    /// The credential saved for a registry host, opened.
    pub fn credential(&self, host: &str) -> anyhow::Result<Option<Credential>> {
        // Molt's own registry: a fresh short-lived credential of its own.
        if let Some(hosted) = self.hosted_registry().filter(|r| r.host() == host) {
            return Ok(Some(hosted.pull_credential()));
        }
        let Some(row) = self.store.get_registry(host)? else {
            return Ok(None);
        };
        let password = self
            .sealer
            .open(&format!("registry:{host}"), &row.secret_sealed)?;
        Ok(Some(Credential {
            username: row.username,
            password: String::from_utf8_lossy(&password).into_owned(),
        }))
    }

    /// The environment a container gets: `PORT`, then the App's variables
    /// with secrets opened.
    pub(crate) fn container_env(
        &self,
        app: &AppRow,
        env: &[EnvEntry],
    ) -> anyhow::Result<Vec<String>> {
        let mut out = vec![format!("PORT={}", app.port)];
        for e in env.iter().filter(|e| e.key != "PORT") {
            let value = if e.secret {
                let plain = self.sealer.open(
                    &env_purpose(&app.name, &e.key),
                    e.sealed.as_deref().unwrap_or_default(),
                )?;
                String::from_utf8_lossy(&plain).into_owned()
            } else {
                e.value.clone().unwrap_or_default()
            };
            out.push(format!("{}={value}", e.key));
        }
        Ok(out)
    }

    /// `text` with every secret value of the App replaced by `***`: the
    /// secrets in `env` (what a deploy's containers got) and those the App
    /// has now. Containers often print their configuration when they crash,
    /// and that output is kept in the deploy's record, which every API
    /// client reads, while secret values are never shown. Values shorter
    /// than `MIN_MASKED` are left alone: masking them would garble ordinary
    /// text and hide nothing worth hiding.
    pub(crate) fn mask_secrets(&self, app: &str, env: &[EnvEntry], text: &str) -> String {
        mask_with(&self.secret_values(app, env), text)
    }

    /// A failure with the App's secret values masked in everything it
    /// carries from the container (its message, output and last check).
    pub(super) fn mask_failure(&self, deploy: &DeployRow, mut failure: Failure) -> Failure {
        let values = self.secret_values(&deploy.app, &deploy.env);
        failure.message = mask_with(&values, &failure.message);
        failure.output = failure.output.map(|o| mask_with(&values, &o));
        failure.last_check = failure.last_check.map(|c| mask_with(&values, &c));
        failure
    }

    /// The opened secret values of `env` and of the App's stored
    /// environment worth masking, longest first (so a secret that contains
    /// another is masked whole).
    fn secret_values(&self, app: &str, env: &[EnvEntry]) -> Vec<String> {
        let stored = self.store.env(app).unwrap_or_default();
        let mut values: Vec<String> = env
            .iter()
            .chain(&stored)
            .filter(|e| e.secret)
            .filter_map(|e| {
                self.sealer
                    .open(
                        &env_purpose(app, &e.key),
                        e.sealed.as_deref().unwrap_or_default(),
                    )
                    .ok()
            })
            .map(|plain| String::from_utf8_lossy(&plain).into_owned())
            .filter(|v| v.chars().count() >= MIN_MASKED)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        values
    }
}

fn mask_with(values: &[String], text: &str) -> String {
    let mut out = text.to_string();
    for v in values {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), "***");
        }
    }
    out
}

/// Secret values shorter than this are not masked in output.
pub(crate) const MIN_MASKED: usize = 4;

/// What a secret variable's sealed value is bound to.
pub(super) fn env_purpose(app: &str, key: &str) -> String {
    format!("env:{app}:{key}")
}
