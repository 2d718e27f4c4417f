//! The dashboard at `/ui/`: static files compiled into the binary and served as they are.
//!
//! The pages are plain HTML, CSS and JavaScript modules with no build step; they read the
//! admin API from the browser like any other client, with the operator's token when one is
//! configured. Serving them needs no token, since they hold no data. Nothing here may load
//! anything from another origin: the Content-Security-Policy below forbids it, and a test
//! checks that no file names an external URL.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Every file of the dashboard: name under `/ui/`, content type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", HTML, include_str!("ui/index.html")),
    ("style.css", CSS, include_str!("ui/style.css")),
    ("favicon.svg", SVG, include_str!("ui/favicon.svg")),
    ("app.js", JS, include_str!("ui/app.js")),
    ("api.js", JS, include_str!("ui/api.js")),
    ("dom.js", JS, include_str!("ui/dom.js")),
    ("chart.js", JS, include_str!("ui/chart.js")),
    ("overview.js", JS, include_str!("ui/overview.js")),
    ("deliveries.js", JS, include_str!("ui/deliveries.js")),
    ("detail.js", JS, include_str!("ui/detail.js")),
    ("replays.js", JS, include_str!("ui/replays.js")),
    ("hosts.js", JS, include_str!("ui/hosts.js")),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Same origin only: scripts, styles, API calls and images (inline SVG charts are DOM, not
/// images, and need nothing extra).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes, to merge into the admin router. Refusals are the API's JSON errors
/// (`bad_path`, `not_found`, `method_not_allowed`) like every other route's.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/{file}",
            get(|super::Segment(file): super::Segment| async move { asset(&file) }),
        )
        .method_not_allowed_fallback(super::method_not_allowed)
}

fn asset(name: &str) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return super::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no file `{name}` in the dashboard"),
        )
        .into_response();
    };
    (
        [
            (header::CONTENT_TYPE, *content_type),
            // Small files, fetched once per page load; revalidating keeps an upgrade visible.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        *body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table and the folder agree: nothing on disk is left unserved, nothing listed is missing.
    #[test]
    fn every_file_in_the_folder_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admin/ui");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = ASSETS.iter().map(|(n, _, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
    }

    /// The dashboard loads nothing from the internet: every URL written in its files names the
    /// SVG namespace (an identifier, never fetched) or a documentation host (`example.com`), or
    /// is built from a value at run time. The Content-Security-Policy enforces the same in the
    /// browser.
    #[test]
    fn no_file_names_an_external_url() {
        for (name, _, body) in ASSETS {
            for (at, _) in body.match_indices("://") {
                let host: String = body[at + 3..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '$' | '{'))
                    .collect();
                let allowed = host == "www.w3.org"
                    && body[at + 3..].starts_with("www.w3.org/2000/svg")
                    || host == "example.com"
                    || host.ends_with(".example.com")
                    || host.is_empty()
                    || host.starts_with("${");
                assert!(
                    allowed,
                    "{name} names `{host}`: the dashboard must not load anything from elsewhere"
                );
            }
            assert!(!body.contains("@import"), "{name}: no CSS imports");
            assert!(!body.contains("url("), "{name}: no CSS url() resources");
        }
    }

    /// Every module a script imports is one we serve.
    #[test]
    fn imports_resolve_to_served_files() {
        for (name, _, body) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .split(['"', '\''])
                    .nth(1)
                    .and_then(|t| t.strip_prefix("./"))
                    .unwrap_or_else(|| panic!("{name}: import without a ./ path: {line}"));
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == target),
                    "{name} imports {target}, which is not served"
                );
            }
        }
    }

    /// The deliveries page offers every classification as a filter, and nothing else.
    #[test]
    fn the_classification_filter_lists_every_classification() {
        let js = include_str!("ui/deliveries.js");
        let list = js
            .split("export const CLASSIFICATIONS = [")
            .nth(1)
            .and_then(|rest| rest.split("];").next())
            .expect("deliveries.js defines CLASSIFICATIONS");
        let offered: Vec<&str> = list
            .split(',')
            .map(|v| v.trim().trim_matches('"'))
            .filter(|v| !v.is_empty())
            .collect();
        let known: Vec<&str> = crate::model::Classification::ALL
            .iter()
            .map(|c| c.as_str())
            .collect();
        assert_eq!(offered, known);
    }

    #[test]
    fn unknown_files_are_404() {
        assert_eq!(asset("index.html").status(), StatusCode::OK);
        assert_eq!(asset("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(asset("nope.js").status(), StatusCode::NOT_FOUND);
    }
}
