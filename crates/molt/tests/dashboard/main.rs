//! The dashboard against a real server, engine and password-protected
//! registry, in a real browser (Debian's chromium through chromedriver) and,
//! for the checks that need none, over plain HTTP. One test binary (linked
//! once), one module per concept:
//!
//! - `browser`: chromedriver and the page helpers the browser tests share;
//! - `deploy_actions`: log in, save a registry credential, create an App,
//!   deploy, see a failure, roll back, set a secret, delete, follow a
//!   recreate deploy;
//! - `edit_config`: "Edit config" and "Redeploy with changes";
//! - `login_and_docs`: login required, CSRF, docs as Markdown (no browser).
//!
//! The browser tests take the screenshots in docs/screenshots/
//! (`MOLT_UPDATE_SCREENSHOTS=1 cargo test -p molt --test dashboard`
//! refreshes them).

#[path = "../support/mod.rs"]
mod support;

mod browser;
mod deploy_actions;
mod edit_config;
mod login_and_docs;
