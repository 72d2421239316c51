//! The Swarm service one replica runs as: what Molt asks Swarm for, kept
//! apart from talking to the engine so it can be read (and tested) whole.

use super::*;

/// The service of one replica: one task, restarted by nobody, its port
/// published in host mode on a port the engine picks, its resources as
/// reservations and limits, placed by the App's constraints.
pub(super) fn service_spec(
    instance: &str,
    default_memory: Option<u64>,
    spec: &ContainerSpec,
    networks: Vec<NetworkAttachmentConfig>,
) -> ServiceSpec {
    let labels = HashMap::from([
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_APP.to_string(), spec.app.clone()),
        (LABEL_DEPLOY.to_string(), spec.deploy.clone()),
        (LABEL_ROLE.to_string(), ROLE_WEB.to_string()),
        (LABEL_REPLICA.to_string(), spec.replica.to_string()),
    ]);
    let memory = spec.memory_bytes.or(default_memory).map(|m| m as i64);
    let nano_cpus = spec.cpus.map(|c| (c * 1e9) as i64);
    let gpus = (spec.gpus > 0).then(|| {
        vec![GenericResourcesInner {
            discrete_resource_spec: Some(GenericResourcesInnerDiscreteResourceSpec {
                kind: Some(GPU_RESOURCE.into()),
                value: Some(spec.gpus as i64),
            }),
            ..Default::default()
        }]
    });
    let container = TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        labels: Some(labels.clone()),
        env: Some(spec.env.clone()),
        read_only: Some(spec.read_only),
        mounts: spec.read_only.then(|| {
            vec![Mount {
                target: Some("/tmp".into()),
                typ: Some(MountType::TMPFS),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: Some(64 << 20),
                    ..Default::default()
                }),
                ..Default::default()
            }]
        }),
        privileges: Some(TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(true),
            ..Default::default()
        }),
        capability_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
        capability_drop: (!spec.cap_add.iter().any(|c| c == "NET_RAW"))
            .then(|| vec!["NET_RAW".to_string()]),
        stop_grace_period: Some(STOP_GRACE.as_nanos() as i64),
        ..Default::default()
    };
    ServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    nano_cpus,
                    memory_bytes: memory,
                    pids: Some(spec.pids_limit as i64),
                }),
                reservations: Some(ResourceObject {
                    nano_cpus,
                    memory_bytes: spec.memory_bytes.map(|m| m as i64),
                    generic_resources: gpus,
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: (!spec.constraints.is_empty()).then(|| spec.constraints.clone()),
                ..Default::default()
            }),
            networks: Some(networks),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(spec.port as i64),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A replica with every setting, for the tests here and the runtime's.
    pub(in crate::runtime::swarm) fn replica() -> ContainerSpec {
        ContainerSpec {
            name: "molt-web-d1".into(),
            image: "registry.example.com/web@sha256:abc".into(),
            app: "web".into(),
            deploy: "d1".into(),
            replica: 0,
            env: vec!["PORT=8080".into()],
            memory_bytes: Some(256 << 20),
            cpus: Some(1.5),
            gpus: 2,
            port: 8080,
            links: Vec::new(),
            cap_add: Vec::new(),
            pids_limit: 1024,
            read_only: true,
            constraints: vec!["node.labels.gpu==true".into()],
        }
    }

    #[test]
    fn a_replica_is_one_unrestarted_task_reserved_placed_and_published_in_host_mode() {
        let spec = service_spec("i1", None, &replica(), Vec::new());
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["Name"], "molt-web-d1");
        assert_eq!(json["Labels"]["molt.instance"], "i1");
        assert_eq!(json["Labels"]["molt.replica"], "0");
        assert_eq!(json["Mode"]["Replicated"]["Replicas"], 1);
        assert_eq!(json["EndpointSpec"]["Mode"], "dnsrr");
        let port = &json["EndpointSpec"]["Ports"][0];
        assert_eq!(port["PublishMode"], "host");
        assert_eq!(port["TargetPort"], 8080);
        assert!(port.get("PublishedPort").is_none(), "the node picks it");
        let task = &json["TaskTemplate"];
        assert_eq!(task["RestartPolicy"]["Condition"], "none");
        assert_eq!(
            task["Placement"]["Constraints"],
            serde_json::json!(["node.labels.gpu==true"])
        );
        let resources = &task["Resources"];
        assert_eq!(resources["Limits"]["MemoryBytes"], 256 << 20);
        assert_eq!(resources["Reservations"]["MemoryBytes"], 256 << 20);
        assert_eq!(resources["Limits"]["NanoCPUs"], 1_500_000_000);
        assert_eq!(resources["Limits"]["Pids"], 1024);
        let gpu = &resources["Reservations"]["GenericResources"][0]["DiscreteResourceSpec"];
        assert_eq!(gpu["Kind"], GPU_RESOURCE);
        assert_eq!(gpu["Value"], 2);
        let container = &task["ContainerSpec"];
        assert_eq!(container["ReadOnly"], true);
        assert_eq!(container["Mounts"][0]["Target"], "/tmp");
        assert_eq!(container["CapabilityDrop"], serde_json::json!(["NET_RAW"]));
        assert_eq!(container["Labels"]["molt.app"], "web");
    }

    #[test]
    fn without_memory_a_replica_gets_the_default_limit_and_no_reservation() {
        let bare = ContainerSpec {
            memory_bytes: None,
            cpus: None,
            gpus: 0,
            constraints: Vec::new(),
            ..replica()
        };
        let json =
            serde_json::to_value(service_spec("i1", Some(64 << 20), &bare, Vec::new())).unwrap();
        let resources = &json["TaskTemplate"]["Resources"];
        assert_eq!(resources["Limits"]["MemoryBytes"], 64 << 20);
        assert!(resources["Reservations"].get("MemoryBytes").is_none());
        assert!(resources["Reservations"].get("GenericResources").is_none());
        assert!(json["TaskTemplate"]["Placement"]
            .get("Constraints")
            .is_none());
    }
}
