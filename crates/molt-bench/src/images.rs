//! The images the benchmark deploys: `fixtures/testapp` built as a static
//! binary (exactly as the test harness builds it) in `FROM scratch` images,
//! one per behaviour, pushed to the benchmark's own registry.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::docker::docker;
use crate::registry::Registry;
use crate::util::run_status;

/// A variant and the `ENV` lines besides `VERSION=<variant>`.
pub const VARIANTS: &[(&str, &[(&str, &str)])] = &[
    ("v1", &[]),
    ("v2", &[]),
    ("v3", &[]),
    // Crashes during start-up before it listens, as a broken build does.
    (
        "crash",
        &[
            ("EXIT_AFTER_MS", "300"),
            ("EXIT_CODE", "3"),
            ("STARTUP_DELAY_MS", "60000"),
        ],
    ),
    // Listens, but its health check answers 500.
    ("unhealthy", &[("HEALTH_STATUS", "500")]),
];

/// The good versions deploys cycle through.
pub const GOOD: [&str; 3] = ["v1", "v2", "v3"];

/// The local tag of a variant, e.g. `molt-bench/testapp:v1`.
pub fn local(variant: &str) -> String {
    format!("molt-bench/testapp:{variant}")
}

/// Builds the static testapp (cargo, into `target/testapp-static`, shared with
/// the tests) and one local image per variant.
pub async fn build(root: &Path) -> Result<()> {
    let target_dir = root.join("target/testapp-static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let target_arg = target_dir.to_string_lossy().to_string();
    // RUSTFLAGS reaches cargo through the environment: set it for this child
    // only, and drop what would override it or the target dir.
    let out = {
        let mut cmd = tokio::process::Command::new(&cargo);
        cmd.current_dir(root)
            .args([
                "build",
                "--release",
                "--target",
                "x86_64-unknown-linux-gnu",
                "-p",
                "testapp",
                "--target-dir",
                &target_arg,
            ])
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(900), cmd.output())
            .await
            .context("building the static testapp took more than 15 min")?
            .context("cannot run cargo to build the static testapp")?
    };
    if !out.status.success() {
        bail!(
            "building the static testapp failed (it needs libc6-dev for static glibc):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let binary = target_dir.join("x86_64-unknown-linux-gnu/release/testapp");
    let context = target_dir.join("bench-docker-context");
    std::fs::create_dir_all(&context)
        .with_context(|| format!("cannot create {}", context.display()))?;
    std::fs::copy(&binary, context.join("testapp"))
        .with_context(|| format!("cannot copy {} into the build context", binary.display()))?;
    for (variant, env) in VARIANTS {
        let mut dockerfile =
            format!("FROM scratch\nCOPY testapp /testapp\nENV VERSION={variant}\n");
        for (k, v) in *env {
            dockerfile.push_str(&format!("ENV {k}={v}\n"));
        }
        dockerfile.push_str("ENTRYPOINT [\"/testapp\"]\n");
        let file = context.join(format!("Dockerfile.{variant}"));
        std::fs::write(&file, dockerfile)?;
        docker(&[
            "build",
            "--quiet",
            "--label",
            "molt-bench=1",
            "--file",
            &file.to_string_lossy(),
            "--tag",
            &local(variant),
            &context.to_string_lossy(),
        ])
        .await
        .with_context(|| format!("docker build of the {variant} image"))?;
    }
    Ok(())
}

/// Pushes every variant to `registry` as `molt-bench/testapp:VARIANT`; the
/// pushed tags are removed locally afterwards so Molt really pulls.
pub async fn push_all(registry: &Registry) -> Result<()> {
    for (variant, _) in VARIANTS {
        let reference = registry.reference(variant);
        docker(&["tag", &local(variant), &reference]).await?;
        docker(&["push", "--quiet", &reference])
            .await
            .with_context(|| format!("pushing {reference}"))?;
        let _ = run_status("docker", &["rmi", &reference], Duration::from_secs(60)).await;
    }
    Ok(())
}
