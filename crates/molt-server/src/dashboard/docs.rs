//! The how-to docs: the Markdown files in `docs/`, embedded in the binary at
//! build time, served as HTML at `/docs/PAGE` and as the same Markdown at
//! `/docs/PAGE.md` (for reading offline or handing to an assistant), headed
//! by the page's source URL and its last-updated date. No login needed.
//!
//! Each file starts with a line `Updated: YYYY-MM-DD`, then its `# Title`;
//! links between pages are written `other-page.md`, which works on a code
//! host and becomes `/docs/other-page` here.

use super::layout::{Nav, Shell};
use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped};
use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

struct Doc {
    slug: &'static str,
    source: &'static str,
}

macro_rules! doc {
    ($slug:literal) => {
        Doc {
            slug: $slug,
            source: include_str!(concat!("../../../../docs/", $slug, ".md")),
        }
    };
}

/// Every how-to, in the order the index lists them.
const DOCS: &[Doc] = &[
    doc!("deploy-a-new-version"),
    doc!("build-and-deploy-from-source"),
    doc!("molts-registry"),
    doc!("roll-back"),
    doc!("redeploy-vs-restart"),
    doc!("environment-and-secrets"),
    doc!("private-registries"),
    doc!("https-and-certificates"),
    doc!("debugging-failed-deploys"),
    doc!("gpu-and-recreate-deploys"),
    doc!("replicas"),
    doc!("scale-out"),
    doc!("change-app-settings"),
    doc!("run-migrations-before-promoting"),
    doc!("running-in-production"),
];

/// A doc split into its parts.
struct Parsed<'a> {
    updated: &'a str,
    title: &'a str,
    /// Everything after the `Updated:` line.
    body: &'a str,
    /// The first paragraph after the title, for the index.
    summary: String,
}

fn parse(source: &str) -> Parsed<'_> {
    let (updated, body) = match source.split_once('\n') {
        Some((first, rest)) if first.starts_with("Updated:") => (
            first.trim_start_matches("Updated:").trim(),
            rest.trim_start(),
        ),
        _ => ("", source),
    };
    let title = body
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .unwrap_or("Untitled")
        .trim();
    let summary = body
        .split("\n\n")
        .map(str::trim)
        .find(|p| !p.is_empty() && !p.starts_with('#'))
        .unwrap_or("")
        .replace('\n', " ");
    Parsed {
        updated,
        title,
        body,
        summary,
    }
}

/// The request's host, if it looks like one; it goes into the Markdown's
/// `Source:` line, so nothing else may get through.
fn host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost")
        .to_string()
}

/// A relative link to `page.md` (with an optional `#fragment`) becomes a
/// link to `/docs/page`.
fn rewrite_link(dest: &str) -> Option<String> {
    if dest.contains("://") || dest.starts_with('/') || dest.starts_with('#') {
        return None;
    }
    let (path, frag) = match dest.split_once('#') {
        Some((p, f)) => (p, format!("#{f}")),
        None => (dest, String::new()),
    };
    let slug = path.trim_start_matches("./").strip_suffix(".md")?;
    (!slug.contains('/')).then(|| format!("/docs/{slug}{frag}"))
}

fn to_html(markdown: &str) -> String {
    let parser = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    )
    .map(|e| match e {
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            let dest_url = match rewrite_link(&dest_url) {
                Some(d) => CowStr::from(d),
                None => dest_url,
            };
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            })
        }
        e => e,
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, parser);
    out
}

fn sidebar(current: Option<&str>) -> Markup {
    html! {
        nav.docs-nav aria-label="How-to guides" {
            p.docs-nav-title { a href="/docs/" { "How-to guides" } }
            ul {
                @for d in DOCS {
                    li { a href={ "/docs/" (d.slug) } aria-current=[(current == Some(d.slug)).then_some("page")] { (parse(d.source).title) } }
                }
            }
        }
    }
}

/// `GET /docs/`: every guide with its summary.
pub async fn index() -> Response {
    let main = html! {
        div.docs {
            (sidebar(None))
            article.prose {
                h1 { "How-to guides" }
                p.lead { "Task-by-task guides for running Apps on Molt. Each page is also available as plain Markdown." }
                ul.doc-list {
                    @for d in DOCS {
                        @let p = parse(d.source);
                        li {
                            a href={ "/docs/" (d.slug) } { strong { (p.title) } }
                            p.muted { (p.summary) }
                        }
                    }
                }
                p.small { a href="/docs/index.md" { "View as Markdown" } }
            }
        }
    };
    Shell {
        title: "Docs",
        nav: Nav::Docs,
        csrf: None,
        notice: None,
        live: None,
    }
    .render(main)
    .into_response()
}

fn markdown_response(headers: &HeaderMap, path: &str, updated: &str, body: &str) -> Response {
    let mut text = format!("Source: http://{}{path}\n", host(headers));
    if !updated.is_empty() {
        text.push_str(&format!("Updated: {updated}\n"));
    }
    text.push('\n');
    text.push_str(body);
    (
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        text,
    )
        .into_response()
}

/// The index as Markdown.
fn index_markdown() -> String {
    let mut md = String::from("# How-to guides\n\n");
    for d in DOCS {
        let p = parse(d.source);
        md.push_str(&format!("- [{}]({}.md): {}\n", p.title, d.slug, p.summary));
    }
    md
}

/// `GET /docs/PAGE` (HTML) and `GET /docs/PAGE.md` (Markdown).
pub async fn page(Path(page): Path<String>, headers: HeaderMap) -> Response {
    if let Some(slug) = page.strip_suffix(".md") {
        if slug == "index" {
            let updated = DOCS
                .iter()
                .map(|d| parse(d.source).updated)
                .max()
                .unwrap_or("");
            return markdown_response(&headers, "/docs/", updated, &index_markdown());
        }
        return match DOCS.iter().find(|d| d.slug == slug) {
            Some(d) => {
                let p = parse(d.source);
                markdown_response(&headers, &format!("/docs/{}", d.slug), p.updated, p.body)
            }
            None => not_found(),
        };
    }
    if page == "index" {
        return index().await;
    }
    let Some(d) = DOCS.iter().find(|d| d.slug == page) else {
        return not_found();
    };
    let p = parse(d.source);
    let main = html! {
        div.docs {
            (sidebar(Some(d.slug)))
            article.prose {
                div.doc-meta {
                    span.muted.small { "Last updated " time datetime=(p.updated) { (p.updated) } }
                    a.small href={ "/docs/" (d.slug) ".md" } type="text/markdown" { "View as Markdown" }
                }
                (PreEscaped(to_html(p.body)))
            }
        }
    };
    Shell {
        title: p.title,
        nav: Nav::Docs,
        csrf: None,
        notice: None,
        live: None,
    }
    .render(main)
    .into_response()
}

fn not_found() -> Response {
    let main = html! {
        div.docs {
            (sidebar(None))
            article.prose {
                h1 { "No such page" }
                p { "There is no guide at this address. The list is on the left, or " a href="/docs/" { "on the index" } "." }
            }
        }
    };
    (
        StatusCode::NOT_FOUND,
        Shell {
            title: "Not found",
            nav: Nav::Docs,
            csrf: None,
            notice: None,
            live: None,
        }
        .render(main),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_doc_has_a_date_a_title_and_a_summary() {
        for d in DOCS {
            let p = parse(d.source);
            assert_eq!(p.updated.len(), 10, "{}: Updated: YYYY-MM-DD", d.slug);
            assert!(
                time::Date::parse(
                    p.updated,
                    &time::format_description::well_known::Iso8601::DATE
                )
                .is_ok(),
                "{}: bad date {}",
                d.slug,
                p.updated
            );
            assert_ne!(p.title, "Untitled", "{}", d.slug);
            assert!(!p.summary.is_empty(), "{}", d.slug);
            assert!(!p.body.starts_with("Updated:"), "{}", d.slug);
        }
    }

    #[test]
    fn links_between_docs_point_at_their_pages() {
        for d in DOCS {
            let html = to_html(parse(d.source).body);
            assert!(
                !html.contains(".md\""),
                "{}: a link still ends in .md",
                d.slug
            );
            for (i, _) in html.match_indices("href=\"/docs/") {
                let rest = &html[i + 12..];
                let slug = rest.split(['"', '#']).next().unwrap();
                assert!(
                    DOCS.iter().any(|x| x.slug == slug),
                    "{}: link to unknown doc {slug}",
                    d.slug
                );
            }
        }
    }

    #[test]
    fn links_are_rewritten() {
        assert_eq!(
            rewrite_link("roll-back.md").as_deref(),
            Some("/docs/roll-back")
        );
        assert_eq!(
            rewrite_link("./roll-back.md#with-config").as_deref(),
            Some("/docs/roll-back#with-config")
        );
        assert_eq!(rewrite_link("https://x.example/a.md"), None);
        assert_eq!(rewrite_link("../README.md"), None);
    }

    #[test]
    fn hosts_are_sanitised() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(host(&h), "127.0.0.1:7000");
        h.insert(
            header::HOST,
            "evil.example/\nX"
                .parse()
                .unwrap_or(header::HeaderValue::from_static("a b")),
        );
        assert_eq!(host(&h), "localhost");
    }
}
