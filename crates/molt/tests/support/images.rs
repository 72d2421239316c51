//! Test images: `fixtures/testapp` built as a static binary and wrapped in
//! `FROM scratch` images, one per behaviour, plus helpers to push them to a
//! [`Registry`] and to run them directly.

use super::{
    docker, http_request, run_bounded, try_docker, wait_until_sync, workspace_root, Registry,
};
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The image variants: name and the `ENV` lines besides `VERSION=<name>`.
pub const VARIANTS: &[(&str, &[(&str, &str)])] = &[
    ("v1", &[]),
    ("v2", &[]),
    ("v3", &[]),
    // Crashes during start-up, before it listens, as a broken build does.
    (
        "crash",
        &[
            ("EXIT_AFTER_MS", "300"),
            ("EXIT_CODE", "3"),
            ("STARTUP_DELAY_MS", "60000"),
        ],
    ),
    ("unhealthy", &[("HEALTH_STATUS", "500")]),
    ("otherport", &[("LISTEN_PORT", "9000")]),
    ("slowstart", &[("STARTUP_DELAY_MS", "1500")]),
    // Declares a `HEALTHCHECK` (see `HEALTHCHECKS`).
    ("imagecheck", &[]),
];

/// Variants whose image declares its own `HEALTHCHECK`: asks `/healthz`
/// every second, unhealthy after two failures in a row.
pub const HEALTHCHECKS: &[(&str, &str)] = &[(
    "imagecheck",
    "HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD [\"/testapp\", \"check\", \"/healthz\"]",
)];

/// The local tag of a variant's image, e.g. `molt-test/testapp:v1`.
pub fn image_name(variant: &str) -> String {
    format!("molt-test/testapp:{variant}")
}

/// The test images, built at most once per test process.
pub struct TestImages {
    /// The static testapp binary the images contain.
    pub binary: PathBuf,
}

impl TestImages {
    /// Builds (once per process) the static testapp and every image in
    /// [`VARIANTS`]. Parallel test processes serialise on a file lock, and the
    /// binary goes to its own target dir, `target/testapp-static`, so the
    /// nested `cargo build` never waits on the lock of the `cargo test` that
    /// runs us.
    pub fn get() -> &'static TestImages {
        static IMAGES: OnceLock<TestImages> = OnceLock::new();
        IMAGES.get_or_init(build_all)
    }

    /// The local image of `variant`, building the images first if needed.
    pub fn image(variant: &str) -> String {
        assert!(
            VARIANTS.iter().any(|(v, _)| *v == variant),
            "unknown test image variant {variant:?}; known: {:?}",
            VARIANTS.iter().map(|(v, _)| v).collect::<Vec<_>>()
        );
        Self::get();
        image_name(variant)
    }
}

fn build_all() -> TestImages {
    let root = workspace_root();
    let target_dir = root.join("target/testapp-static");
    std::fs::create_dir_all(&target_dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", target_dir.display()));

    let lock_path = target_dir.join("build.lock");
    let lock = File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    // Another test process may be building: wait for it, with a bound.
    let deadline = Instant::now() + Duration::from_secs(900);
    while lock.try_lock().is_err() {
        assert!(
            Instant::now() < deadline,
            "waited 15 min for the test image lock {}",
            lock_path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-p",
            "testapp",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // These would override RUSTFLAGS or the target dir.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    let out = run_bounded(&mut cmd, None, Duration::from_secs(900))
        .unwrap_or_else(|e| panic!("running cargo to build the static testapp failed: {e}"));
    assert!(
        out.status.success(),
        "building the static testapp failed (needs the x86_64-unknown-linux-gnu std and libc6-dev for static glibc):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let binary = target_dir.join("x86_64-unknown-linux-gnu/release/testapp");

    // One context dir; each variant has its own Dockerfile in it.
    let context = target_dir.join("docker-context");
    std::fs::create_dir_all(&context).expect("creating the docker build context dir failed");
    std::fs::copy(&binary, context.join("testapp")).unwrap_or_else(|e| {
        panic!(
            "copying {} into the build context failed: {e}",
            binary.display()
        )
    });
    for (variant, env) in VARIANTS {
        let mut dockerfile =
            format!("FROM scratch\nCOPY testapp /testapp\nENV VERSION={variant}\n");
        for (k, v) in *env {
            dockerfile.push_str(&format!("ENV {k}={v}\n"));
        }
        for (_, line) in HEALTHCHECKS.iter().filter(|(v, _)| v == variant) {
            dockerfile.push_str(line);
            dockerfile.push('\n');
        }
        dockerfile.push_str("ENTRYPOINT [\"/testapp\"]\n");
        let file = context.join(format!("Dockerfile.{variant}"));
        std::fs::write(&file, dockerfile).expect("writing a Dockerfile failed");
        docker(&[
            "build",
            "--quiet",
            "--label",
            "molt-test=1",
            "--file",
            &file.to_string_lossy(),
            "--tag",
            &image_name(variant),
            &context.to_string_lossy(),
        ]);
    }
    drop(lock); // Closing the file releases the lock.
    TestImages { binary }
}

/// Pushes the local image of `variant` to `registry` as `REPO:TAG` and returns
/// the reference `HOST/REPO:TAG`. The local `HOST/REPO:TAG` tag is removed
/// afterwards, so the engine has to pull it back for real (and the registry
/// log shows it).
pub fn push(registry: &Registry, repo: &str, variant: &str, tag: &str) -> String {
    let local = TestImages::image(variant);
    let reference = format!("{}/{repo}:{tag}", registry.host());
    docker(&["tag", &local, &reference]);
    let _untag = LocalTag(reference.clone());
    registry.docker(&["push", &reference]);
    reference
}

/// Removes a local image tag on drop (e.g. an image a test pulled), so the
/// engine is left as the test found it even when the test fails.
pub struct LocalTag(pub String);

impl Drop for LocalTag {
    fn drop(&mut self) {
        let _ = try_docker(None, &["rmi", &self.0], None);
    }
}

/// The digest (`sha256:...`) of `REPO:TAG` as the registry serves it, or None
/// if it has no such manifest.
pub fn manifest_digest(registry: &Registry, repo: &str, tag: &str) -> Option<String> {
    let resp = get_manifest(registry, repo, tag);
    (resp.status == 200).then(|| {
        resp.header("docker-content-digest")
            .expect("the registry sent no Docker-Content-Digest")
            .to_string()
    })
}

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn get_manifest(registry: &Registry, repo: &str, reference: &str) -> super::HttpResponse {
    let auth = registry.authorization();
    let mut headers = vec![("Accept", MANIFEST_TYPES)];
    if registry.has_auth() {
        headers.push(("Authorization", &auth));
    }
    let addr = registry.addr();
    http_request(
        addr,
        "GET",
        &registry.host(),
        &format!("/v2/{repo}/manifests/{reference}"),
        &headers,
        &[],
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("GET manifest {repo}:{reference} from {addr} failed: {e}"))
}

/// Makes `HOST/REPO:TAG` an OCI image index whose only entry is a real image
/// (v1, pushed as `REPO:TAG-arm64-child`) declared as `linux/arm64`: pulling
/// it for linux/amd64 must fail, which is what Molt's preflight has to catch.
/// Returns the reference.
pub fn push_index_without_amd64(registry: &Registry, repo: &str, tag: &str) -> String {
    let child_tag = format!("{tag}-arm64-child");
    push(registry, repo, "v1", &child_tag);
    let child = get_manifest(registry, repo, &child_tag);
    assert_eq!(
        child.status,
        200,
        "GET manifest {repo}:{child_tag}: {}",
        child.text()
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": child.header("content-type").expect("the registry sent no Content-Type for a manifest"),
            "digest": child.header("docker-content-digest").expect("the registry sent no Docker-Content-Digest"),
            "size": child.body.len(),
            "platform": {"architecture": "arm64", "os": "linux"},
        }],
    });
    let body = serde_json::to_vec(&index).expect("serialising the image index failed");
    let auth = registry.authorization();
    let mut headers = vec![("Content-Type", "application/vnd.oci.image.index.v1+json")];
    if registry.has_auth() {
        headers.push(("Authorization", &auth));
    }
    let resp = http_request(
        registry.addr(),
        "PUT",
        &registry.host(),
        &format!("/v2/{repo}/manifests/{tag}"),
        &headers,
        &body,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("PUT of the arm64-only index {repo}:{tag} failed: {e}"));
    assert_eq!(
        resp.status,
        201,
        "PUT of the arm64-only index {repo}:{tag} was refused: {}",
        resp.text()
    );
    format!("{}/{repo}:{tag}", registry.host())
}

/// A container run directly with the docker CLI (not through Molt), its port
/// published on 127.0.0.1 only. Removed on drop.
pub struct Container {
    pub id: String,
    port: u16,
}

impl Container {
    /// `docker run -d` of `image` with `env`, publishing `container_port` on
    /// 127.0.0.1 at a port the engine picks.
    pub fn run(image: &str, env: &[(&str, &str)], container_port: u16) -> Container {
        let publish = format!("127.0.0.1::{container_port}");
        let mut args = vec![
            "run",
            "--detach",
            "--label",
            "molt-test=1",
            "--publish",
            &publish,
        ];
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for e in &env {
            args.extend(["--env", e]);
        }
        args.push(image);
        let id = docker(&args).trim().to_string();
        Container {
            id,
            port: container_port,
        }
    }

    /// The published address on 127.0.0.1.
    pub fn addr(&self) -> SocketAddr {
        let out = docker(&["port", &self.id, &format!("{}/tcp", self.port)]);
        out.lines()
            .find_map(|l| l.trim().strip_prefix("127.0.0.1:"))
            .and_then(|p| p.parse::<u16>().ok())
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .unwrap_or_else(|| {
                panic!(
                    "container {} has no port published on 127.0.0.1: {out:?}",
                    self.id
                )
            })
    }

    /// Waits (bounded) until `GET path` on the published port answers with
    /// any status, i.e. the app listens; returns that status.
    pub fn wait_listening(&self, path: &str, timeout: Duration) -> u16 {
        let addr = self.addr();
        let mut status = None;
        let ok = wait_until_sync(timeout, || {
            status = http_request(
                addr,
                "GET",
                &addr.to_string(),
                path,
                &[],
                &[],
                Duration::from_secs(2),
            )
            .ok()
            .map(|r| r.status);
            status.is_some()
        });
        assert!(
            ok,
            "container {} did not answer on {addr} within {timeout:?}; logs:\n{}",
            self.id,
            self.logs()
        );
        status.expect("status was set when the wait succeeded")
    }

    /// The exit code once the container has stopped, waiting up to `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> Option<i32> {
        let mut code = None;
        wait_until_sync(timeout, || {
            let out = docker(&[
                "inspect",
                "--format",
                "{{.State.Running}} {{.State.ExitCode}}",
                &self.id,
            ]);
            code = match out.trim().split_once(' ') {
                Some(("false", c)) => c.parse().ok(),
                _ => None,
            };
            code.is_some()
        });
        code
    }

    /// stdout and stderr of the container so far.
    pub fn logs(&self) -> String {
        let out = try_docker(None, &["logs", &self.id], None);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = try_docker(None, &["rm", "--force", "--volumes", &self.id], None);
    }
}
