//! Molt's Docker network on a real engine: servers starting at the same
//! moment end up with one network of the name, and a name that two
//! networks already share (engines before API 1.44 allow it) is repaired
//! rather than making every later start fail as "ambiguous".

use molt_server::runtime::Runtime;
use std::process::Command;

/// Removes every network of the test's name when the test ends, passed or
/// not.
struct Networks(String);

impl Networks {
    fn new(tag: &str) -> Networks {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Networks(format!("molt-test-{tag}-{}-{n}", std::process::id()))
    }

    /// The ids of the networks called exactly this.
    fn ids(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["network", "ls", "--format", "{{.ID}} {{.Name}}"])
            .output()
            .expect("docker network ls");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, name)| *name == self.0)
            .map(|(id, _)| id.to_string())
            .collect()
    }

    fn count(&self) -> usize {
        self.ids().len()
    }
}

impl Drop for Networks {
    fn drop(&mut self) {
        // By id: a name two networks share cannot be removed by name.
        for id in self.ids() {
            let _ = Command::new("docker").args(["network", "rm", &id]).output();
        }
    }
}

#[tokio::test]
async fn servers_starting_together_share_one_network() {
    let net = Networks::new("together");
    let starts = (0..6).map(|i| {
        let name = net.0.clone();
        tokio::spawn(async move {
            let runtime = Runtime::connect(&format!("together{i}"), &name).await?;
            runtime.ensure_network().await
        })
    });
    for outcome in futures_util::future::join_all(starts).await {
        outcome.expect("task").expect("ensure_network");
    }
    assert_eq!(
        net.count(),
        1,
        "servers that started together made duplicates"
    );
}

#[tokio::test]
async fn a_name_two_networks_share_is_repaired() {
    let net = Networks::new("shared");
    // Two of the name, made the way the engine API allows (the docker CLI
    // asks the engine to refuse a duplicate; an API client need not).
    let docker = bollard::Docker::connect_with_defaults().expect("engine");
    for _ in 0..2 {
        docker
            .create_network(bollard::models::NetworkCreateRequest {
                name: net.0.clone(),
                driver: Some("bridge".into()),
                ..Default::default()
            })
            .await
            .ok();
    }
    let duplicated = net.count();
    assert!(duplicated >= 1, "creating the networks failed");
    eprintln!("networks of the name before the repair: {duplicated}");
    let runtime = Runtime::connect("shared", &net.0).await.expect("engine");
    runtime
        .ensure_network()
        .await
        .expect("ensure_network with a name two networks share");
    assert_eq!(net.count(), 1, "{duplicated} made by the test");
    // And again: nothing more is created.
    runtime.ensure_network().await.expect("second ensure");
    assert_eq!(net.count(), 1);
}
