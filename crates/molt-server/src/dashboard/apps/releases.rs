//! The Releases card of an App's page (its builds from source, each with
//! its output, and a Promote button per release), the instructions for
//! building from source, a build's page with its live output, and the
//! Promote action.

use super::*;
use crate::dashboard::live::Live;
use axum::http::HeaderMap;

/// Builds shown on an App's page.
const BUILDS_SHOWN: usize = 10;

/// The exact command lines that build this App from source.
pub(super) fn build_instructions(app: &str) -> Markup {
    html! {
        details.build-from-source {
            summary { "Build from source instead" }
            p.small { "From the directory that holds the Dockerfile, on a machine with the " code { "molt" } " command:" }
            pre.cli { code {
                "molt build " (app) " .                  # build a release; promote it later\n"
                "molt deploy " (app) " --build .         # build and promote in one step\n"
                "molt deploy " (app) " --build . --git-ref v1.0   # the tree of a Git tag"
            } }
            p.small { a href="/docs/build-and-deploy-from-source" { "Build and deploy from source" } }
        }
    }
}

/// The App's builds, newest first: status, source, the release each made
/// (with Promote unless it serves) and a link to its output.
pub(super) fn releases_region(s: &DashState, csrf: &str, app: &AppRow) -> Markup {
    let store = &s.api.deployer.store;
    let builds = store
        .list_builds(&app.name, BUILDS_SHOWN)
        .unwrap_or_default();
    let releases = s.api.builds.releases(&app.name).unwrap_or_default();
    let base = app_url(&app.name);
    html! {
        @if builds.is_empty() {
            p.muted { "No builds yet. " (build_instructions(&app.name)) }
        } @else {
            table.releases {
                thead { tr { th { "Build" } th { "Status" } th { "Source" } th { "Started" } th { "Release" } th {} } }
                tbody {
                    @for b in &builds {
                        @let release = b.release.as_ref().and_then(|id| releases.iter().find(|r| &r.id == id));
                        tr data-build=(b.id) data-status=(b.status) {
                            td { a href={ (base) "/builds/" (b.id) } { code { (b.id) } } }
                            td { span class={ "badge " (badge_class(&b.status)) } { (b.status) } }
                            td { (b.source) }
                            td { (layout::ago(&b.created_at)) }
                            td {
                                @match (&b.release, release) {
                                    (Some(id), Some(r)) => {
                                        code { (id) }
                                        @if r.serving { " " span.tag { "serving" } }
                                    }
                                    (Some(id), None) => { code { (id) } " " span.muted.small { "(pruned)" } }
                                    (None, _) => span.muted { "—" },
                                }
                            }
                            td {
                                @if let Some(r) = release.filter(|r| !r.serving) {
                                    form.promote method="post" action={ (base) "/releases/promote" } {
                                        (layout::csrf_field(csrf))
                                        input type="hidden" name="release_id" value=(r.id);
                                        button.btn.primary type="submit" { "Promote" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn badge_class(status: &str) -> &'static str {
    match status {
        "succeeded" => "ok",
        "failed" => "bad",
        _ => "busy",
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PromoteForm {
    pub(super) release_id: String,
}

pub async fn promote(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<PromoteForm>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let r = s
        .api
        .deployer
        .promote(&app.name, &f.form.release_id, TRIGGER)
        .await;
    let what = format!("Promoting release {}", f.form.release_id);
    started(&s, &f.session, &app.name, "releases", &what, r)
}

/// A build's status, failing step and output.
fn build_region(s: &DashState, app: &AppRow, id: &str) -> Option<Markup> {
    let b = s.api.builds.view(&app.name, id, 0).ok()?;
    Some(html! {
        div.status-line { span class={ "badge " (badge_class(&b.status)) } { (b.status) } }
        dl.facts {
            div { dt { "Source" } dd { (b.source) } }
            div { dt { "Dockerfile" } dd { code { (b.dockerfile) } } }
            div { dt { "Image" } dd { code.image { (b.image) } } }
            div { dt { "Digest" } dd { @match &b.digest { Some(d) => code.digest { (d) }, None => span.muted { "—" } } } }
            div { dt { "Release" } dd { @match &b.release { Some(r) => code { (r) }, None => span.muted { "—" } } } }
            div { dt { "Started" } dd { (layout::ago(&b.created_at)) } }
        }
        @if let Some(step) = &b.failed_step {
            div.callout.bad {
                strong { "The failing step and its output:" }
                pre.build-step { (step) }
            }
        } @else if let Some(e) = &b.error {
            div.callout.bad { strong { "Failed: " } span.error-text { (e) } }
        }
        h2 { "Output" }
        pre.build-log { @for line in &b.log { (line) "\n" } }
    })
}

pub async fn build_page(
    State(s): State<DashState>,
    Path((name, id)): Path<(String, String)>,
    auth: Authed,
) -> Response {
    let app = match require_app(&s, &auth, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let Some(region) = build_region(&s, &app, &id) else {
        return layout::error_page(
            StatusCode::NOT_FOUND,
            "No such build",
            "This App has no build with that id.",
        );
    };
    let base = app_url(&app.name);
    let main = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/" { "Apps" } " / " a href=(base) { (app.name) } " / "
            span aria-current="page" { "build " (id) }
        }
        div.page-head { h1 { "Build " code { (id) } } }
        section.card { (live::region("build", region)) }
    };
    let title = format!("Build {id} of {}", app.name);
    Shell {
        title: &title,
        nav: Nav::Apps,
        csrf: Some(&auth.csrf),
        notice: None,
        live: Some(format!("{base}/builds/{id}/live")),
    }
    .render(main)
    .into_response()
}

/// The build page's live region, rendered again at each tick while the
/// build runs.
pub async fn build_live(
    State(s): State<DashState>,
    Path((name, id)): Path<(String, String)>,
    _auth: Authed,
    headers: HeaderMap,
) -> Response {
    let (s, name, id) = (&s, &name, &id);
    let render = move || async move {
        let app = match s.api.deployer.store.get_app(name) {
            Ok(Some(a)) => a,
            Ok(None) => return Live::Answer(live::gone("/")),
            Err(e) => return Live::Answer(internal_page(e)),
        };
        match build_region(s, &app, id) {
            Some(region) => {
                let active = s
                    .api
                    .builds
                    .view(&app.name, id, usize::MAX)
                    .is_ok_and(|b| b.status == "building");
                Live::Regions {
                    active,
                    regions: vec![("build", region)],
                }
            }
            None => Live::Answer(live::gone(&app_url(&app.name))),
        }
    };
    let store = &s.api.deployer.store;
    live::held(store, &s.api.stopping, &headers, |_| false, render).await
}
