//! Releases built elsewhere: an external build pushes its image to a
//! registry (Molt's own, or the user's with a saved credential) and
//! registers it here by digest. Nothing is pulled yet and nothing serving
//! changes; `molt releases promote` runs it.

use super::*;
use crate::store::ReleaseRow;

impl Deployer {
    /// Records a release of `image` (a registry reference, by digest or by
    /// tag) with the App's settings and environment as they are now, once
    /// its registry confirms the image and says its digest.
    pub async fn register_release(
        &self,
        app: &str,
        image: &str,
    ) -> Result<ReleaseRow, DeployError> {
        let app = self.find_app(app)?;
        let image = ImageRef::parse(image).map_err(|e| {
            DeployError::invalid(
                "invalid_image",
                format!("{e}: give the pushed image as HOST/REPO@sha256:DIGEST"),
            )
        })?;
        let cred = self.credential(&image.registry)?;
        let digest = self.registries.preflight(&image, cred.as_ref()).await?;
        if let Some(given) = &image.digest {
            if *given != digest {
                return Err(DeployError::invalid(
                    "digest_mismatch",
                    format!("the registry has {digest} for {image}, not {given}: push again"),
                ));
            }
        }
        let release = ReleaseRow {
            id: crate::datadir::random_hex(5),
            app: app.name.clone(),
            build: None,
            image: ImageRef {
                digest: None,
                ..image.clone()
            }
            .to_string(),
            digest,
            settings: crate::store::AppSettings::of(&app),
            env: self.store.env(&app.name)?,
            created_at: now(),
        };
        self.store.insert_release(&release)?;
        tracing::info!(app = %app.name, release = %release.id, image = %release.image, digest = %release.digest, "registered a release built elsewhere");
        Ok(release)
    }
}
