//! Molt's domain core: plain types and functions with no I/O, shared by the
//! server, the command line and the tests.

pub mod api;
pub mod attach;
pub mod deploy;
pub mod env;
pub mod failure;
pub mod health;
pub mod name;
pub mod reference;
pub mod release;
pub mod size;

pub use deploy::{AppStatus, DeployKind, DeployStatus};
pub use failure::{Failure, FailureKind};
pub use name::AppName;
pub use reference::ImageRef;
