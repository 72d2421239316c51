//! Building an image from a source context with the engine's build API.
//! The classic builder: BuildKit over the API needs a gRPC session
//! (bollard's `buildkit` feature, a large dependency), and the classic
//! builder gives the same result for a Dockerfile, with its output as lines.

use super::{engine_message, Runtime, LABEL_INSTANCE};
use anyhow::{anyhow, Result};
use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;
use tokio::sync::mpsc::UnboundedSender;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// A tar file holding the context.
    pub context: PathBuf,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    pub build_args: HashMap<String, String>,
    /// The tag the image gets (`molt.local/APP:BUILD`).
    pub tag: String,
    /// Labels on the image (which App and build it is).
    pub labels: HashMap<String, String>,
}

impl Runtime {
    /// Builds `spec`, sending each line of the builder's output to `log`
    /// as it comes; the image's id (`sha256:…`). The error is the
    /// builder's own message (the output before it went to `log`).
    pub async fn build_image(
        &self,
        spec: BuildSpec,
        log: UnboundedSender<String>,
    ) -> Result<String> {
        let file = tokio::fs::File::open(&spec.context).await?;
        let body = tokio_util::io::ReaderStream::new(file);
        let mut labels = spec.labels.clone();
        labels.insert(LABEL_INSTANCE.into(), self.instance.clone());
        let options = BuildImageOptions {
            dockerfile: spec.dockerfile.clone(),
            t: Some(spec.tag.clone()),
            rm: true,
            forcerm: true,
            buildargs: Some(spec.build_args.clone()),
            labels: Some(labels),
            version: BuilderVersion::BuilderV1,
            ..Default::default()
        };
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_try_stream(body)));
        let mut id = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream.or(info.status) {
                        for line in text.lines().filter(|l| !l.trim().is_empty()) {
                            let _ = log.send(line.to_string());
                        }
                    }
                    if let Some(aux) = info.aux.and_then(|a| a.id) {
                        id = Some(aux);
                    }
                }
                Err(e) => return Err(anyhow!("{}", engine_message(&e))),
            }
        }
        match id {
            Some(id) => Ok(id),
            // Engines that report no id in the stream: the tag has it.
            None => {
                let image = self.docker.inspect_image(&spec.tag).await.map_err(|e| {
                    anyhow!(
                        "the build ended but its image is missing: {}",
                        engine_message(&e)
                    )
                })?;
                image
                    .id
                    .ok_or_else(|| anyhow!("the engine reported no id for the built image"))
            }
        }
    }
}

impl Runtime {
    /// Removes a built image by its tag (retention). Refused by the engine
    /// while a container uses it; gone already is fine.
    pub async fn remove_image(&self, reference: &str) -> Result<()> {
        let options = bollard::query_parameters::RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        match self
            .docker
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if super::is_not_found(&e) => Ok(()),
            Err(e) => Err(anyhow!("{}", engine_message(&e))),
        }
    }
}
