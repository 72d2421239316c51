//! Storage faults: a data dir that cannot be created fails at start with a
//! clear message; a full disk refuses changes clearly (507) without
//! corrupting the database, and Molt carries on once space is freed.

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

#[test]
fn an_unusable_data_dir_fails_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let [api, proxy] = free_ports::<2>();
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_molt")).args([
            "server",
            "--data-dir",
            &file.join("data").to_string_lossy(),
            "--api",
            &format!("127.0.0.1:{api}"),
            "--proxy",
            &format!("127.0.0.1:{proxy}"),
        ]),
        None,
        Duration::from_secs(30),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot create the data dir"), "{stderr}");
    assert!(stderr.contains("--data-dir"), "says what to do: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A tmpfs of `size`, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs failed (the tests run as root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_changes_clearly_and_corrupts_nothing() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let disk = Tmpfs::mount("8m");
    let data = disk.0.path().join("molt");
    let server = MoltServer::start(Some(data.clone()));
    let out = molt(
        &server,
        &["apps", "create", "web", "--image", &v1, "--port", "8080"],
    );
    assert_eq!(out.status, 0, "{out}");

    // Fill the disk.
    let filler = disk.0.path().join("filler");
    let _ = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=64k",
        ])
        .output();
    let out = molt(&server, &["deploy", "web", &v2]);
    assert_ne!(out.status, 0, "{out}");
    assert!(
        out.stderr.contains("out of space") || out.stderr.contains("No space left"),
        "{out}"
    );
    assert!(!out.stderr.contains("panicked"), "{out}");
    // The old version serves throughout.
    let (status, body) = get(server.proxy_addr(), "web.localhost", "/")
        .await
        .unwrap();
    assert_eq!((status, body.trim()), (200, "testapp v1"));

    // Space back: the database is intact and deploys work again.
    std::fs::remove_file(&filler).unwrap();
    let out = molt(&server, &["apps", "list", "--json"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(out.stdout.contains("\"web\""), "{out}");
    let check = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "python3 -c \"import sqlite3; print(sqlite3.connect('{}').execute('pragma integrity_check').fetchone()[0])\"",
            data.join("molt.db").display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "ok",
        "{check:?}"
    );
    // The reconciler settles anything the full disk left half-recorded.
    let out = molt(&server, &["deploy", "web", &v2]);
    assert!(out.status == 0 || out.stderr.contains("busy"), "{out}");
    if out.status != 0 {
        let mut server = server;
        server.restart();
        let out = molt(&server, &["deploy", "web", &v2]);
        assert_eq!(out.status, 0, "{out}");
    }
}
