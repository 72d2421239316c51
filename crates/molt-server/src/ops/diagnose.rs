//! `molt debug`: what is wrong with an App, from its latest failed deploy's
//! typed failure and its serving containers' state, each finding with a
//! hint.

use crate::deploy::Deployer;
use crate::ops::views::deploy_view;
use crate::store::AppRow;
use molt_core::api::{DebugReport, Finding};

pub async fn diagnose(deployer: &Deployer, app: &AppRow) -> anyhow::Result<DebugReport> {
    let name = &app.name;
    let deploys = deployer.store.list_deploys(&app.name)?;
    // The newest failed deploy that came after the serving one.
    let failed = deploys
        .iter()
        .take_while(|d| Some(&d.id) != app.current_deploy.as_ref())
        .find(|d| d.status == molt_core::DeployStatus::Failed)
        .cloned();
    let mut findings = Vec::new();
    if let Some(f) = &failed {
        findings.push(crate::debug::classify(
            f.failure.as_ref(),
            f.error.as_deref().unwrap_or_default(),
            crate::debug::Subject {
                app: &app.name,
                deploy: Some(&f.id),
                image: Some(&f.image),
                memory_limit: app.memory_bytes,
            },
        ));
    }
    let serving = deploys
        .iter()
        .find(|d| Some(&d.id) == app.current_deploy.as_ref());
    // Every serving container; with several, each finding names its replica.
    let rows = deployer.serving_rows(app)?;
    let many = rows.len() > 1;
    for row in &rows {
        let container = &row.container_id;
        let (the, replica) = if many {
            (
                format!("serving container of replica {}", row.replica),
                format!(" (replica {})", row.replica),
            )
        } else {
            ("serving container".to_string(), String::new())
        };
        match deployer.runtime.state(container).await? {
            None => findings.push(Finding {
                kind: "container_missing".into(),
                summary: format!("the {the} is gone"),
                detail: None,
                hint: format!("deploy again (`molt redeploy {name}`); the server also recreates routes when it restarts"),
            }),
            Some(state) if state.lost_node.is_some() => findings.push(Finding {
                kind: "node_down".into(),
                summary: format!(
                    "the node of the {the}, {}, is down: the replica left the route",
                    state.lost_node.as_deref().unwrap_or_default()
                ),
                detail: None,
                hint: "the other replicas serve; a replacement starts on another node and joins once healthy (`molt deploys NAME` shows it); see `docker node ls` for the node".replace("NAME", name),
            }),
            Some(state) if state.oom_killed => {
                let oom = molt_core::Failure::new(
                    molt_core::FailureKind::OomKilled,
                    "the container was killed for using more memory than its limit",
                );
                let mut f = crate::debug::classify(
                    Some(&oom),
                    "",
                    crate::debug::Subject {
                        app: &app.name,
                        memory_limit: app.memory_bytes,
                        ..Default::default()
                    },
                );
                f.summary.push_str(&replica);
                findings.push(f);
            }
            Some(state) if state.restarting || !state.running || state.restart_count > 0 => {
                let logs = deployer.runtime.logs_tail(container, 20).await;
                let logs = deployer.mask_secrets(name, &[], &logs);
                findings.push(Finding {
                    kind: "crash_loop".into(),
                    summary: format!(
                        "the {the} {} (last exit code {}, restarted {} time(s) by the engine)",
                        if state.running && !state.restarting { "is running but has crashed before" } else { "keeps crashing" },
                        state.exit_code.unwrap_or(-1),
                        state.restart_count
                    ),
                    detail: (!logs.is_empty()).then_some(logs),
                    hint: format!("its last output says why; roll back with `molt rollback {name}` while you fix it"),
                });
            }
            Some(_) if deployer.is_out_of_rotation(container) => findings.push(Finding {
                kind: "health_check_failing".into(),
                summary: format!("the {the} fails its health check and is out of the proxy's rotation"),
                detail: None,
                hint: "autoheal replaces it after the failure threshold; the other replicas serve meanwhile".into(),
            }),
            Some(_) => {}
        }
    }
    findings.extend(crate::certs::https_findings(&deployer.store, &app.hosts())?);
    for peer in deployer.proxy.peers().into_iter().filter(|p| !p.in_date) {
        findings.push(Finding {
            kind: "proxy_peer_out_of_date".into(),
            summary: format!(
                "the proxy at {} (--proxy-peer) is out of date: it may still send this App's traffic to an old version",
                peer.addr
            ),
            detail: peer.problem,
            hint: "take that node out of the load balancer or DNS until it answers again; once it does, it gets the whole route table within a second".into(),
        });
    }
    // On a swarm, what Swarm says about the tasks (none on a single host):
    // the serving replicas', then the failed deploy's, kept from when their
    // services were removed.
    let mut swarm_tasks = Vec::new();
    for row in &rows {
        swarm_tasks.extend(deployer.runtime.tasks(&row.container_id).await);
    }
    if let Some(f) = &failed {
        swarm_tasks.extend(deployer.runtime.ended_tasks(name, &f.id));
    }
    // Otherwise the tasks of replicas replaced since (their node was lost),
    // kept under the deploy that started them.
    if failed.is_none() {
        if let Some(ended) = deploys
            .iter()
            .map(|d| deployer.runtime.ended_tasks(name, &d.id))
            .find(|t| !t.is_empty())
        {
            swarm_tasks.extend(ended);
        }
    }
    Ok(DebugReport {
        app: app.name.clone(),
        status: app.status,
        serving_digest: serving.and_then(|d| d.digest.clone()),
        failed_deploy: failed.map(|d| deploy_view(&d, Vec::new())),
        findings,
        swarm_tasks,
    })
}
