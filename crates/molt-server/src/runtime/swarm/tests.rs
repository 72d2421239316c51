//! Unit tests of the Swarm runtime: task reports, and where a replica is
//! reached (its node's address and its published port).

use super::spec::tests::replica;
use super::*;

#[test]
fn a_task_is_reported_with_its_replica_state_and_swarms_error() {
    let spec = service_spec("i1", None, &replica(), Vec::new());
    let task = Task {
        spec: spec.task_template,
        desired_state: Some(TaskState::RUNNING),
        status: Some(bollard::models::TaskStatus {
            state: Some(TaskState::PENDING),
            message: Some("pending task scheduling".into()),
            err: Some("no suitable node (scheduling constraints not satisfied on 1 node)".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let report = task_report(&task, None);
    assert_eq!(report.deploy, "d1");
    assert_eq!(report.replica, Some(0));
    assert_eq!(report.node, None);
    assert_eq!(report.desired_state, "running");
    assert_eq!(report.state, "pending");
    assert!(report
        .error
        .as_deref()
        .unwrap()
        .contains("scheduling constraints"));
    assert_eq!(report.message, "pending task scheduling");
    let ok = Task {
        status: Some(bollard::models::TaskStatus {
            state: Some(TaskState::RUNNING),
            err: Some(String::new()),
            ..Default::default()
        }),
        ..task
    };
    assert_eq!(task_report(&ok, Some("n1".into())).error, None);
}

#[test]
fn replicas_are_reached_at_their_node_and_published_port() {
    let mut state = not_running(None, None);
    assert_eq!(Swarm::upstream_addr(&state, 8080), None);
    state.ip = Some("10.0.0.7".into());
    state.published.insert(8080, 30001);
    assert_eq!(
        Swarm::upstream_addr(&state, 8080).as_deref(),
        Some("10.0.0.7:30001")
    );
    assert_eq!(Swarm::upstream_addr(&state, 9000), None);
    state.ip = Some("fd00::8".into());
    assert_eq!(
        Swarm::upstream_addr(&state, 8080).as_deref(),
        Some("[fd00::8]:30001")
    );
}

#[test]
fn the_ipv4_binding_of_a_port_counts_when_the_engine_lists_both() {
    let binding = |target: i64, published: i64| EndpointPortConfig {
        target_port: Some(target),
        published_port: Some(published),
        publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
        ..Default::default()
    };
    let ports = ipv4_ports(vec![binding(8080, 32770), binding(8080, 32771)]);
    assert_eq!(ports, HashMap::from([(8080, 32770)]));
    assert!(ipv4_ports(Vec::new()).is_empty());
}

#[test]
fn a_node_is_reached_at_its_swarm_address_and_its_own_at_loopback_without_one() {
    assert_eq!(
        node_addr(Some("10.0.0.7"), None, false).as_deref(),
        Some("10.0.0.7")
    );
    assert_eq!(
        node_addr(Some("10.0.0.5"), Some("10.0.0.5:2377"), true).as_deref(),
        Some("10.0.0.5")
    );
    assert_eq!(
        node_addr(Some("0.0.0.0"), None, true).as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(node_addr(None, None, true).as_deref(), Some("127.0.0.1"));
    assert_eq!(
        node_addr(Some("127.0.0.1"), Some("10.0.0.5:2377"), true).as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(node_addr(Some(""), None, false), None);
}

#[test]
fn another_manager_without_a_usable_listed_address_is_reached_at_its_manager_address() {
    // A leader elected after the swarm was made lists 0.0.0.0, or the
    // loopback it reached itself at: neither is where others reach it.
    for listed in [Some("0.0.0.0"), Some("127.0.0.1"), Some(""), None] {
        assert_eq!(
            node_addr(listed, Some("10.0.0.8:2377"), false).as_deref(),
            Some("10.0.0.8"),
            "{listed:?}"
        );
    }
    assert_eq!(
        node_addr(Some("0.0.0.0"), Some("[fd00::8]:2377"), false).as_deref(),
        Some("fd00::8")
    );
    // A worker's listed address stands; nothing usable at all is none.
    assert_eq!(
        node_addr(Some("10.0.0.9"), Some("10.0.0.8:2377"), false).as_deref(),
        Some("10.0.0.9")
    );
    assert_eq!(
        node_addr(Some("0.0.0.0"), Some("0.0.0.0:2377"), false),
        None
    );
    assert_eq!(node_addr(Some("127.0.0.1"), None, false), None);
}
