//! The service layer: operations and read models that the API, the
//! dashboard and autoheal share, so each rule and each view is written once
//! and no HTTP module imports another. The deploy operations themselves
//! live in `deploy/intake.rs`; this module holds what is not a deploy.

pub mod diagnose;
pub mod registries;
pub mod views;

use crate::deploy::Engine;
use std::sync::Arc;

/// What every HTTP surface (the API, its event and log streams, the
/// dashboard) is given: the deploy executor, with the store and the ports,
/// and the API token.
#[derive(Clone)]
pub struct Shared {
    pub engine: Arc<Engine>,
    pub token: Arc<String>,
    /// Cancelled when the server stops: long-held requests (event streams,
    /// live regions) end early instead of holding the graceful stop up.
    pub stopping: tokio_util::sync::CancellationToken,
}
