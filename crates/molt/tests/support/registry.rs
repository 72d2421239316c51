//! A real private registry (`docker-registry`, Debian's build of
//! distribution 2.8) on 127.0.0.1, one per test, storing into a temp dir.

use super::{docker_with, free_port, http_request, run_bounded, try_docker, wait_until_sync};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tempfile::TempDir;

/// A running registry; killed on drop, its storage deleted with it.
pub struct Registry {
    dir: TempDir,
    port: u16,
    child: Child,
    auth: bool,
    username: String,
    password: String,
    /// Whether `docker login` was done in this registry's client config dir.
    logged_in: Mutex<bool>,
}

impl Registry {
    /// Starts a registry on a free port. With `auth`, every request needs the
    /// basic-auth credentials [`username`](Self::username) /
    /// [`password`](Self::password) (an htpasswd file made by `htpasswd -Bbn`).
    /// Returns once `/v2/` answers (401 or 200); panics with the registry's
    /// log if it does not within 20 s.
    pub fn start(auth: bool) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("molt-test-registry-")
            .tempdir()
            .expect("creating a temp dir for the registry failed");
        let username = "molt-test".to_string();
        // Unique per registry, so a test cannot pass by using stale credentials.
        let password = format!("pw-{:016x}", RandomState::new().build_hasher().finish());
        let port = free_port();
        let root = dir.path();

        let mut auth_yaml = String::new();
        if auth {
            let out = run_bounded(
                Command::new("htpasswd").args(["-Bbn", &username, &password]),
                None,
                Duration::from_secs(30),
            )
            .expect("running `htpasswd` failed: install apache2-utils (.ci/run does)");
            assert!(
                out.status.success(),
                "htpasswd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(root.join("htpasswd"), &out.stdout)
                .expect("writing the htpasswd file failed");
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: molt-test\n    path: {}\n",
                root.join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
            root.join("data").display()
        );
        let config_path = root.join("registry.yml");
        std::fs::write(&config_path, config).expect("writing the registry config failed");
        std::fs::create_dir_all(root.join("docker-config"))
            .expect("creating the docker client config dir failed");

        let log = std::fs::File::create(root.join("registry.log"))
            .expect("creating the registry log failed");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the registry log handle failed"))
            .stderr(log)
            .spawn()
            .expect("starting `docker-registry` failed: install the docker-registry package (.ci/run does)");

        let mut registry = Registry {
            dir,
            port,
            child,
            auth,
            username,
            password,
            logged_in: Mutex::new(false),
        };
        let addr = registry.addr();
        let mut exited = None;
        let ready = wait_until_sync(Duration::from_secs(20), || {
            if let Ok(Some(status)) = registry.child.try_wait() {
                exited = Some(status);
                return true;
            }
            http_request(
                addr,
                "GET",
                &addr.to_string(),
                "/v2/",
                &[],
                &[],
                Duration::from_secs(2),
            )
            .is_ok_and(|r| r.status == 200 || r.status == 401)
        });
        if let Some(status) = exited {
            panic!(
                "docker-registry exited at start ({status}); its log:\n{}",
                registry.log()
            );
        }
        assert!(
            ready,
            "docker-registry did not answer /v2/ on {addr} within 20 s; its log:\n{}",
            registry.log()
        );
        registry
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Whether the registry requires credentials.
    pub fn has_auth(&self) -> bool {
        self.auth
    }

    /// The user name; only enforced when started with `auth`.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password; only enforced when started with `auth`.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The `Authorization` header value for this registry's credentials.
    pub fn authorization(&self) -> String {
        super::basic_auth(&self.username, &self.password)
    }

    /// The registry's log so far (startup, one access-log line per request),
    /// e.g. to count manifest requests with [`Registry::count_requests`].
    pub fn log(&self) -> String {
        std::fs::read(self.dir.path().join("registry.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// How many requests `METHOD PATH...` the access log shows, e.g.
    /// `count_requests("GET", "/v2/app/manifests/")` (HEAD requests are
    /// counted separately as "HEAD"; the engine resolves a tag with HEAD alone
    /// when it already holds that digest).
    pub fn count_requests(&self, method: &str, path_prefix: &str) -> usize {
        let needle = format!("\"{method} {path_prefix}");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// A docker client config dir used only for this registry, so logging in
    /// never touches `~/.docker/config.json`.
    pub fn docker_config_dir(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    /// Runs `docker --config <this registry's dir> ARGS`, logged in first when
    /// the registry has auth (e.g. to `pull` an image back). Panics on failure.
    pub fn docker(&self, args: &[&str]) -> String {
        self.login();
        docker_with(Some(&self.docker_config_dir()), args, None)
    }

    /// Logs the docker CLI in (once) with this registry's credentials.
    pub fn login(&self) {
        let mut logged_in = self.logged_in.lock().expect("registry login lock poisoned");
        if !self.auth || *logged_in {
            return;
        }
        let out = try_docker(
            Some(&self.docker_config_dir()),
            &[
                "login",
                "--username",
                &self.username,
                "--password-stdin",
                &self.host(),
            ],
            Some(self.password.as_bytes()),
        );
        assert!(
            out.status.success(),
            "docker login {} failed: {}\nregistry log:\n{}",
            self.host(),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        *logged_in = true;
    }

    /// The registry's temp dir (config, htpasswd, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // While the registry still holds its port: no other test's registry
        // can have that port, so only this one's images go.
        self.forget_images();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Removes the engine's references to this registry's images (pushed by
    /// the test, pulled by a server): they outlive the registry otherwise,
    /// thousands after a few runs of the suite. One still used by a
    /// container stays; nothing here may panic (it runs on drop).
    fn forget_images(&self) {
        let host = self.host();
        let mut names = Vec::new();
        for pattern in [
            format!("reference={host}/*"),
            format!("reference={host}/*/*"),
        ] {
            let listed = run_bounded(
                Command::new("docker").args([
                    "images",
                    "--filter",
                    &pattern,
                    "--format",
                    "{{.Repository}} {{.Tag}} {{.Digest}}",
                ]),
                None,
                Duration::from_secs(30),
            );
            let Ok(out) = listed else { return };
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut parts = line.split_whitespace();
                let (Some(repo), Some(tag), Some(digest)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                names.push(match (tag, digest) {
                    ("<none>", "<none>") => continue,
                    ("<none>", digest) => format!("{repo}@{digest}"),
                    (tag, _) => format!("{repo}:{tag}"),
                });
            }
        }
        if names.is_empty() {
            return;
        }
        let mut rmi = Command::new("docker");
        rmi.arg("rmi").args(&names);
        let _ = run_bounded(&mut rmi, None, Duration::from_secs(60));
    }
}
