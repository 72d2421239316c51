//! Opening sealed values where they are needed: registry credentials for a
//! pull, and a container's environment.

use super::*;

impl Engine {
    /// The credential saved for a registry host, opened.
    pub fn credential(&self, host: &str) -> anyhow::Result<Option<Credential>> {
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
    pub(super) fn container_env(
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
}

/// What a secret variable's sealed value is bound to.
pub(super) fn env_purpose(app: &str, key: &str) -> String {
    format!("env:{app}:{key}")
}
