//! Deploys of an image that carry settings: a rollback `--with-config`
//! brings back its target's settings, and a failed image deploy is tried
//! again with the setting that broke it changed.

use super::*;

/// Every deploy records its release (the App's whole settings beside its
/// environment); a rollback `--with-config` brings back the target's
/// settings with the swap, and one without it changes only the image.
#[tokio::test]
async fn a_rollback_with_config_restores_the_settings_of_its_target() {
    let rig = rig();
    rig.create(1, "bluegreen").await;
    let first = rig.app();
    let created = rig
        .deployer
        .store
        .get_deploy(first.current_deploy.as_ref().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(created.config, Some(AppSettings::of(&first)));
    let d = rig
        .update(UpdateAppRequest {
            port: Some(9090),
            health_path: Some("/ready".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    assert_eq!(d.config.as_ref().map(|c| c.port), Some(9090));

    // Without --with-config the settings stay.
    let (_, r) = rig
        .deployer
        .rollback("web", Some(&created.id), false, "test")
        .await
        .unwrap();
    let r = rig.ended(&r.id).await;
    assert_eq!(r.status, DeployStatus::Succeeded, "{:?}", r.failure);
    assert_eq!(rig.app().port, 9090);
    assert_eq!(r.config.as_ref().map(|c| c.port), Some(9090));

    let (_, r) = rig
        .deployer
        .rollback("web", Some(&created.id), true, "test")
        .await
        .unwrap();
    let r = rig.ended(&r.id).await;
    assert_eq!(r.status, DeployStatus::Succeeded, "{:?}", r.failure);
    let app = rig.app();
    assert_eq!(AppSettings::of(&app), AppSettings::of(&first));
    assert_eq!(app.current_deploy.as_deref(), Some(r.id.as_str()));
    let addr = rig.fakes.world().routes["web"].targets[0].addr.clone();
    assert!(addr.ends_with(&format!(":{}", first.port)), "{addr}");
    rig.assert_serves();
}

/// An image deploy that failed on its port is tried again with the port
/// its version listens on: the App takes the image and the port together,
/// and the preview said it would start new containers.
#[tokio::test]
async fn a_failed_image_deploy_is_tried_again_with_new_settings() {
    let rig = rig();
    rig.create(1, "bluegreen").await;
    rig.fakes.world().listen_port = Some(9000);
    let (_, d) = rig.deployer.deploy("web", V2, "test").await.unwrap();
    let d = rig.ended(&d.id).await;
    assert_eq!(d.status, DeployStatus::Failed);
    let failure = d.failure.unwrap();
    let now = AppSettings::of(&rig.app());
    assert_eq!(
        super::blamed_setting(&now, &now, &failure),
        Some(super::Blamed::Port)
    );
    let req = UpdateAppRequest {
        port: Some(9000),
        ..Default::default()
    };
    let preview = rig.deployer.preview_update("web", &req, true).unwrap();
    assert_eq!(preview.changes, vec!["port 8080 → 9000"]);
    assert!(matches!(
        preview.effect,
        super::ChangeEffect::NewContainers(_)
    ));
    let (_, d) = rig
        .deployer
        .deploy_with_settings("web", V2, req, "test")
        .await
        .unwrap();
    let d = rig.ended(&d.id).await;
    assert_eq!(d.status, DeployStatus::Succeeded, "{:?}", d.failure);
    let app = rig.app();
    assert_eq!(app.port, 9000);
    assert_eq!(app.current_deploy.as_deref(), Some(d.id.as_str()));
    assert!(d.image.contains("v2"), "{}", d.image);
    // A settings change alone previews as one and starts nothing.
    let req = UpdateAppRequest {
        drain_timeout_secs: Some(3),
        ..Default::default()
    };
    let preview = rig.deployer.preview_update("web", &req, false).unwrap();
    assert_eq!(preview.effect, super::ChangeEffect::RouteOnly);
    rig.assert_serves();
}
