//! `routes.json`: the proxy's routes on disk, so that after its own restart
//! it serves the same Apps at once, before the server is even up. Written
//! atomically (temp file, fsync, rename, fsync dir): a crash leaves either
//! the old file or the new one, never half of one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::admin::Route;

#[derive(Debug, Serialize, Deserialize)]
struct RoutesFile {
    version: u32,
    routes: Vec<Route>,
}

const VERSION: u32 = 1;

/// Reads the routes; a missing file means none.
pub fn load(path: &Path) -> anyhow::Result<Vec<Route>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let file: RoutesFile = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid routes file: {e}", path.display()))?;
    if file.version != VERSION {
        anyhow::bail!(
            "{} has version {}, this proxy reads version {VERSION}",
            path.display(),
            file.version
        );
    }
    Ok(file.routes)
}

/// Replaces the file with `routes`, durably, before returning.
pub async fn save(path: &Path, routes: Vec<Route>) -> io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || save_blocking(&path, &routes))
        .await
        .map_err(io::Error::other)?
}

fn save_blocking(path: &Path, routes: &[Route]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("routes file has no parent dir"))?;
    let body = serde_json::to_vec_pretty(&RoutesFileRef {
        version: VERSION,
        routes,
    })
    .map_err(io::Error::other)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("routes.json")
    ));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&body)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Borrowing twin of `RoutesFile`, to serialize without cloning routes.
#[derive(Serialize)]
struct RoutesFileRef<'a> {
    version: u32,
    routes: &'a [Route],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::Target;

    #[tokio::test]
    async fn round_trips_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("routes.json");
        assert!(load(&path).expect("missing is empty").is_empty());
        let route = Route {
            app: "web".into(),
            hosts: vec!["web.test".into()],
            targets: vec![Target {
                addr: "127.0.0.1:1".into(),
                id: "c".into(),
            }],
            upstream_timeout_ms: 1000,
            drain_timeout_ms: 1000,
            tunnel_idle_timeout_ms: None,
            max_body_bytes: None,
            https_redirect: None,
            hsts_max_age_secs: None,
            console: false,
        };
        save(&path, vec![route.clone()]).await.expect("save");
        save(&path, vec![route.clone(), route.clone()])
            .await
            .expect("save again");
        assert_eq!(load(&path).expect("load"), vec![route.clone(), route]);
        let leftovers = fs::read_dir(dir.path()).expect("ls").count();
        assert_eq!(leftovers, 1, "no temp file left behind");
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("routes.json");
        fs::write(&path, b"{not json").expect("write");
        assert!(load(&path).is_err());
    }
}
