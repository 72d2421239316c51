//! The actions on an App: deploy, redeploy, restart, scale, cancel,
//! rollback, environment, template, delete.

use super::*;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DeployForm {
    pub(super) image: String,
}

pub async fn deploy(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<DeployForm>,
) -> Response {
    let CsrfForm { session, form } = f;
    let app = match require_app(&s, &session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let back = app_url(&app.name);
    let image = form.image.trim();
    let st = FormState::default().with_value("image", image);
    if image.is_empty() {
        let st = st.with_error(
            "image",
            "Enter the image to deploy, such as ghcr.io/acme/web:1.5.0.",
        );
        return flash_to(
            &s,
            &session,
            Flash::form("deploy", st),
            &format!("{back}#deploy"),
        );
    }
    let r = s.api.deployer.deploy(&app.name, image, TRIGGER).await;
    started_from_field(&s, &session, &app.name, ("deploy", "image"), st, r, |dep| {
        format!(
            "Deploying {}: deploy {} has started.",
            dep.image,
            crate::deploy::short(&dep.id)
        )
    })
}

/// The answer to a form whose one field (`form`, `field`) started a deploy:
/// the notice `notice` writes, or the engine's refusal next to the field
/// (above the form when another deploy is running), with what was typed.
pub(super) fn started_from_field(
    s: &DashState,
    session: &Authed,
    app: &str,
    (form, field): (&str, &str),
    st: FormState,
    r: Result<(AppRow, DeployRow), DeployError>,
    notice: impl FnOnce(&DeployRow) -> String,
) -> Response {
    let back = app_url(app);
    match r {
        Ok((_, dep)) => flash_to(s, session, Flash::notice(notice(&dep)), &back),
        Err(e) => {
            let (code, msg) = explain(e);
            let st = if code == "conflict" {
                st.with_general(msg)
            } else {
                st.with_error(field, msg)
            };
            flash_to(s, session, Flash::form(form, st), &format!("{back}#{form}"))
        }
    }
}

/// The answer to an action that started a deploy (or could not).
pub(super) fn started(
    s: &DashState,
    session: &Authed,
    app: &str,
    form: &str,
    what: &str,
    r: Result<(AppRow, DeployRow), DeployError>,
) -> Response {
    let back = app_url(app);
    match r {
        Ok((_, dep)) => flash_to(
            s,
            session,
            Flash::notice(format!(
                "{what}: deploy {} has started.",
                crate::deploy::short(&dep.id)
            )),
            &back,
        ),
        Err(e) => {
            let (_, msg) = explain(e);
            flash_to(
                s,
                session,
                Flash::form(form, FormState::default().with_general(msg)),
                &format!("{back}#{form}"),
            )
        }
    }
}

pub async fn redeploy(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<layout::Ignore>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let r = s.api.deployer.redeploy(&app.name, TRIGGER).await;
    started(
        &s,
        &f.session,
        &app.name,
        "deploy",
        "Redeploying the current image",
        r,
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RestartForm {
    pub(super) hard: Option<String>,
}

pub async fn restart(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<RestartForm>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let hard = checked(&f.form.hard);
    let r = s.api.deployer.restart(&app.name, hard, TRIGGER).await;
    let what = if hard {
        "Restarting in place"
    } else {
        "Restarting"
    };
    started(&s, &f.session, &app.name, "deploy", what, r)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ScaleForm {
    pub(super) replicas: String,
}

/// Scale: as `molt apps scale`, through a deploy of kind `scale`.
pub async fn scale(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<ScaleForm>,
) -> Response {
    let CsrfForm { session, form } = f;
    let app = match require_app(&s, &session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let raw = form.replicas.trim();
    let mut st = FormState::default().with_value("replicas", raw);
    const HOW_MANY: &str = "Enter how many replicas should serve: a whole number from 1 to 100.";
    let Some(replicas) = number::<u32>(&mut st, "replicas", raw, HOW_MANY) else {
        return flash_to(
            &s,
            &session,
            Flash::form("scale", st.with_error("replicas", HOW_MANY)),
            &format!("{}#scale", app_url(&app.name)),
        );
    };
    let r = s.api.deployer.scale(&app.name, replicas, TRIGGER).await;
    started_from_field(
        &s,
        &session,
        &app.name,
        ("scale", "replicas"),
        st,
        r,
        |dep| {
            format!(
                "Scaling {} to {replicas} replica(s): deploy {} has started.",
                app.name,
                crate::deploy::short(&dep.id)
            )
        },
    )
}

pub async fn cancel(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<layout::Ignore>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let back = app_url(&app.name);
    match s.api.deployer.cancel(&app.name) {
        Ok(id) => flash_to(
            &s,
            &f.session,
            Flash::notice(format!(
                "Canceling deploy {}: the new container is being removed; the current version keeps serving.",
                crate::deploy::short(&id)
            )),
            &back,
        ),
        Err(e) => {
            let (_, msg) = explain(e);
            flash_to(
                &s,
                &f.session,
                Flash::form("progress", FormState::default().with_general(msg)),
                &format!("{back}#progress"),
            )
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RollbackForm {
    pub(super) deploy_id: String,
    pub(super) with_config: Option<String>,
}

pub async fn rollback(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<RollbackForm>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let target = opt(&f.form.deploy_id);
    let r = s
        .api
        .deployer
        .rollback(
            &app.name,
            target.as_deref(),
            checked(&f.form.with_config),
            TRIGGER,
        )
        .await;
    let what = match &target {
        Some(id) => format!("Rolling back to deploy {}", crate::deploy::short(id)),
        None => "Rolling back".to_string(),
    };
    started(&s, &f.session, &app.name, "history", &what, r)
}

/// Reads the environment form: which variables to set and which to unset,
/// or the per-field errors. Secret rows left empty keep their value; plain
/// rows are sent only when their value changed.
pub(super) fn read_env_form(
    pairs: &[(String, String)],
    stored: &[EnvEntry],
) -> (Vec<(String, String, bool)>, Vec<String>, FormState) {
    let map: HashMap<&str, &str> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut set = Vec::new();
    let mut unset = Vec::new();
    let mut st = FormState::default();
    // Rows are numbered from 0 without gaps; the bound only stops a forged
    // form from making us loop long.
    for i in 0..10_000 {
        let Some(key) = map.get(format!("k{i}").as_str()) else {
            break;
        };
        // A variable removed elsewhere since the page was loaded: skip it.
        let Some(entry) = stored.iter().find(|e| e.key == *key) else {
            continue;
        };
        let value = map.get(format!("v{i}").as_str()).copied().unwrap_or("");
        if map.contains_key(format!("r{i}").as_str()) {
            unset.push(entry.key.clone());
        } else if entry.secret {
            if !value.is_empty() {
                set.push((entry.key.clone(), value.to_string(), true));
            }
        } else {
            st.values
                .insert(format!("v:{}", entry.key), value.to_string());
            if entry.value.as_deref() != Some(value) {
                set.push((entry.key.clone(), value.to_string(), false));
            }
        }
    }
    let nk = map.get("nk").map(|k| k.trim()).unwrap_or("");
    let nv = map.get("nv").copied().unwrap_or("");
    let secret = map.contains_key("ns");
    st.values.insert("nk".into(), nk.to_string());
    if secret {
        st.values.insert("ns".into(), "on".into());
    } else {
        st.values.insert("nv".into(), nv.to_string());
    }
    if nk.is_empty() {
        if !nv.is_empty() {
            st.errors.insert(
                "nk".into(),
                "Give the variable a name, such as LOG_LEVEL.".into(),
            );
        }
    } else if let Err(e) = molt_core::env::validate_key(nk) {
        st.errors.insert("nk".into(), e);
    } else if let Err(e) = molt_core::env::validate_value(nk, nv) {
        st.errors.insert("nv".into(), e);
    } else {
        set.push((nk.to_string(), nv.to_string(), secret));
    }
    (set, unset, st)
}

pub async fn change_env(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<Vec<(String, String)>>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let back = app_url(&app.name);
    let stored = match s.api.deployer.store.env(&app.name) {
        Ok(e) => e,
        Err(e) => return internal_page(e),
    };
    let apply = f.form.iter().any(|(k, v)| k == "apply" && !v.is_empty());
    let (set, unset, st) = read_env_form(&f.form, &stored);
    if !st.is_empty() {
        return flash_to(
            &s,
            &f.session,
            Flash::form("env", st),
            &format!("{back}#env"),
        );
    }
    if set.is_empty() && unset.is_empty() && !apply {
        return flash_to(
            &s,
            &f.session,
            Flash::notice("Nothing changed in the environment."),
            &format!("{back}#env"),
        );
    }
    let (n_set, n_unset) = (set.len(), unset.len());
    match s
        .api
        .deployer
        .change_env(&app.name, set, unset, apply, TRIGGER)
        .await
    {
        Ok(dep) => {
            let mut msg = format!("Environment saved ({n_set} set, {n_unset} removed).");
            match dep {
                Some(d) => msg.push_str(&format!(
                    " Applying now: config deploy {} has started.",
                    crate::deploy::short(&d.id)
                )),
                None => msg.push_str(" It applies on the next deploy."),
            }
            flash_to(&s, &f.session, Flash::notice(msg), &format!("{back}#env"))
        }
        Err(e) => {
            let (_, msg) = explain(e);
            flash_to(
                &s,
                &f.session,
                Flash::form("env", st.with_general(msg)),
                &format!("{back}#env"),
            )
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TemplateForm {
    pub(super) new_name: String,
    pub(super) with_secrets: Option<String>,
}

pub async fn template(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<TemplateForm>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let back = app_url(&app.name);
    let new_name = f.form.new_name.trim().to_string();
    let st = FormState::default().with_value("new_name", &new_name);
    if new_name.is_empty() {
        let st = st.with_error("new_name", "Give the new App a name.");
        return flash_to(
            &s,
            &f.session,
            Flash::form("template", st),
            &format!("{back}#template"),
        );
    }
    let req = CreateAppRequest {
        name: new_name,
        from: Some(app.name.clone()),
        with_secrets: checked(&f.form.with_secrets),
        ..Default::default()
    };
    match s.api.deployer.create_app(req, TRIGGER).await {
        Ok((new, _)) => flash_to(
            &s,
            &f.session,
            Flash::notice(format!(
                "Created {} from {}: its first deploy has started.",
                new.name, app.name
            )),
            &app_url(&new.name),
        ),
        Err(e) => {
            let (code, msg) = explain(e);
            let st = if matches!(code, "invalid_name" | "conflict") {
                st.with_error("new_name", msg)
            } else {
                st.with_general(msg)
            };
            flash_to(
                &s,
                &f.session,
                Flash::form("template", st),
                &format!("{back}#template"),
            )
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DeleteForm {
    pub(super) confirm: String,
}

pub async fn delete(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<DeleteForm>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let back = app_url(&app.name);
    if f.form.confirm.trim() != app.name {
        let st = FormState::default().with_error(
            "confirm",
            format!("Type the App's name, {}, exactly to confirm.", app.name),
        );
        return flash_to(
            &s,
            &f.session,
            Flash::form("delete", st),
            &format!("{back}#delete"),
        );
    }
    match s.api.deployer.delete_app(&app.name).await {
        Ok(()) => flash_to(
            &s,
            &f.session,
            Flash::notice(format!(
                "Deleted {} with its containers, route, environment and history.",
                app.name
            )),
            "/",
        ),
        Err(e) => {
            let (_, msg) = explain(e);
            let st = FormState::default().with_general(msg);
            flash_to(
                &s,
                &f.session,
                Flash::form("delete", st),
                &format!("{back}#delete"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn plain(k: &str, v: &str) -> EnvEntry {
        EnvEntry {
            key: k.into(),
            secret: false,
            value: Some(v.into()),
            sealed: None,
        }
    }
    fn secret(k: &str) -> EnvEntry {
        EnvEntry {
            key: k.into(),
            secret: true,
            value: None,
            sealed: Some(vec![1, 2, 3]),
        }
    }
    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
    #[test]
    fn env_form_sends_only_changes() {
        let stored = vec![plain("A", "1"), secret("B"), plain("C", "3")];
        let (set, unset, st) = read_env_form(
            &pairs(&[
                ("k0", "A"),
                ("v0", "1"),
                ("k1", "B"),
                ("v1", ""),
                ("k2", "C"),
                ("v2", "x"),
                ("r2", "on"),
                ("nk", "D"),
                ("nv", "4"),
                ("ns", "on"),
            ]),
            &stored,
        );
        assert!(st.is_empty(), "{st:?}");
        assert_eq!(set, vec![("D".to_string(), "4".to_string(), true)]);
        assert_eq!(unset, vec!["C".to_string()]);
        // A secret new value is not kept for the form.
        assert!(st.value("nv").is_none());
    }
    #[test]
    fn env_form_replaces_secrets_and_edits_plain_values() {
        let stored = vec![plain("A", "1"), secret("B")];
        let (set, unset, _) = read_env_form(
            &pairs(&[("k0", "A"), ("v0", "2"), ("k1", "B"), ("v1", "new")]),
            &stored,
        );
        assert_eq!(
            set,
            vec![
                ("A".to_string(), "2".to_string(), false),
                ("B".to_string(), "new".to_string(), true)
            ]
        );
        assert!(unset.is_empty());
    }
    #[test]
    fn env_form_errors_name_the_field() {
        let (_, _, st) = read_env_form(&pairs(&[("nk", ""), ("nv", "x")]), &[]);
        assert!(st.error("nk").is_some());
        let (_, _, st) = read_env_form(&pairs(&[("nk", "1BAD"), ("nv", "x")]), &[]);
        assert!(st.error("nk").is_some());
    }
}
