//! Turning an ingest request line and headers into a decision: which mode, which target, which
//! headers travel on. Pure functions, table-tested; no I/O and no pingora types.

use std::collections::BTreeMap;

use crate::config::Endpoint;

/// A refusal, with the HTTP status and the machine-readable code the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Reject {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// For 405: the methods the route accepts, sent as `Allow`.
    pub allow: Option<&'static str>,
}

impl Reject {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Reject {
        Reject {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    /// The JSON body: `{"error": {"code": ..., "message": ...}}`.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "error": {"code": self.code, "message": self.message}
        }))
        .unwrap_or_default()
    }
}

/// Which of the three ways of handing over a webhook a request uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/{absolute URL}`: deliver to exactly that URL.
    UrlPrefix { target: String },
    /// `/e/NAME/rest?query`: deliver to the endpoint's URL joined with the rest.
    Endpoint {
        name: String,
        target: String,
        /// The part after the endpoint name, path and query, part of the idempotency identity.
        rest: String,
    },
    /// `POST /v1/events`.
    Envelope,
}

const FORWARD_METHODS: [&str; 3] = ["POST", "PUT", "PATCH"];

/// Decides the route from the method and the raw path-and-query of the request line.
///
/// The path's shape alone says which methods a route takes (`/v1/events`: POST; everything
/// else is forwarded: POST, PUT, PATCH), so the method is checked before anything the path
/// names: `GET /` or `GET /favicon.ico` is a 405 with `Allow`, not a 400 about the target.
pub fn route(
    method: &str,
    path_and_query: &str,
    endpoints: &BTreeMap<String, Endpoint>,
) -> Result<Route, Reject> {
    if path_and_query == "/v1/events" || path_and_query.starts_with("/v1/events?") {
        if method != "POST" {
            return Err(method_not_allowed(method, "POST"));
        }
        return Ok(Route::Envelope);
    }
    check_forward_method(method)?;
    if let Some(after) = path_and_query.strip_prefix("/e/") {
        let (name, rest) = match after.find(['/', '?']) {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        let Some(endpoint) = endpoints.get(name) else {
            return Err(Reject::new(
                404,
                "unknown_endpoint",
                format!("no endpoint named `{name}` is configured"),
            ));
        };
        let target = join_endpoint(endpoint.url.as_str(), rest);
        // A receiver that decodes `%2F` (or `%5C`) before it resolves `..` would read
        // `..%2Fadmin` as `../admin`: such a rest is refused whatever the URL parser makes of it.
        let rest_path = rest
            .split('?')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if ["%2f", "%5c", "%2e"].iter().any(|e| rest_path.contains(e)) {
            return Err(Reject::new(
                400,
                "invalid_target",
                format!(
                    "`{rest}`: an encoded `/`, `\\` or `.` in the path after endpoint `{name}` is refused (it could lead out of the endpoint's path at the receiver)"
                ),
            ));
        }
        if !stays_under(&endpoint.url, &target) {
            return Err(Reject::new(
                400,
                "invalid_target",
                // Not the path itself: it may hold the receiver's token (a Slack-style URL),
                // and ingest answers any local process.
                format!("`{rest}` leads out of endpoint `{name}`'s path"),
            ));
        }
        return Ok(Route::Endpoint {
            name: name.to_string(),
            target,
            rest: rest.to_string(),
        });
    }
    let target = path_and_query.strip_prefix('/').unwrap_or(path_and_query);
    validate_target(target)?;
    Ok(Route::UrlPrefix {
        target: target.to_string(),
    })
}

fn check_forward_method(method: &str) -> Result<(), Reject> {
    if FORWARD_METHODS.contains(&method) {
        Ok(())
    } else {
        Err(method_not_allowed(method, "POST, PUT, PATCH"))
    }
}

fn method_not_allowed(method: &str, allowed: &'static str) -> Reject {
    Reject {
        allow: Some(allowed),
        ..Reject::new(
            405,
            "method_not_allowed",
            format!("{method} is not accepted here; use {allowed}"),
        )
    }
}

/// A target must be an absolute http(s) URL with a host.
pub fn validate_target(target: &str) -> Result<url::Url, Reject> {
    let bad = |why: &str| {
        Reject::new(
            400,
            "invalid_target",
            format!("`{target}` is not an absolute http(s) URL: {why}"),
        )
    };
    // A request line cannot hold them; a lenient parser let one through.
    if target.contains(|c: char| c == ' ' || c.is_control()) {
        return Err(bad(
            "it holds a space or a control character (percent-encode it)",
        ));
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(bad(
            "prefix the receiver's URL, e.g. /https://receiver.example.com/hooks",
        ));
    }
    let url = url::Url::parse(target).map_err(|e| bad(&e.to_string()))?;
    match url.host_str() {
        Some(h) if !h.is_empty() => {}
        _ => return Err(bad("it has no host")),
    }
    if url.port() == Some(0) {
        return Err(bad("port 0 cannot be connected to"));
    }
    if !crate::model::host_fits_dns(&url) {
        return Err(bad(
            "its host name is longer than DNS allows (253 characters, 63 per label)",
        ));
    }
    Ok(url)
}

/// Whether `target` (an endpoint's URL joined with the request's rest) still lies under the
/// endpoint once dot segments (`..`, `%2e%2e`) are resolved: the endpoint's headers and
/// signature must not be sent to a sibling path. A target that does not parse is left to the
/// target check, which names the problem.
pub(crate) fn stays_under(base: &url::Url, target: &str) -> bool {
    let Ok(t) = url::Url::parse(target) else {
        return true;
    };
    let root = base.path().trim_end_matches('/');
    t.origin() == base.origin()
        && (root.is_empty() || t.path() == root || t.path().starts_with(&format!("{root}/")))
}

/// Whether `target` is what [`join_endpoint`] makes of `base` and some rest: under its path
/// ([`stays_under`]), with its credentials, and with its query first. A delivery stored for an
/// endpoint that has since been pointed elsewhere (another host or path, rotated credentials
/// or query) fails this, so the endpoint's current headers and secret are not sent to it.
pub(crate) fn built_from(base: &url::Url, target: &str) -> bool {
    let Ok(t) = url::Url::parse(target) else {
        return false;
    };
    let query_kept = match base.query() {
        None | Some("") => true,
        Some(q) => t
            .query()
            .is_some_and(|tq| tq == q || tq.starts_with(&format!("{q}&"))),
    };
    stays_under(base, target)
        && t.username() == base.username()
        && t.password() == base.password()
        && query_kept
}

/// `https://x/base` + `/a/b?q=1` = `https://x/base/a/b?q=1`; queries of both are kept.
pub fn join_endpoint(base: &str, rest: &str) -> String {
    let (base_path, base_query) = split_query(base);
    let (rest_path, rest_query) = split_query(rest);
    let mut out = if rest_path.is_empty() || rest_path == "/" && base_path.ends_with('/') {
        base_path.to_string()
    } else {
        format!("{}{}", base_path.trim_end_matches('/'), rest_path)
    };
    let queries: Vec<&str> = [base_query, rest_query]
        .into_iter()
        .flatten()
        .filter(|q| !q.is_empty())
        .collect();
    if !queries.is_empty() {
        out.push('?');
        out.push_str(&queries.join("&"));
    }
    out
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    }
}

/// Headers that describe one hop, not the message: never stored, never forwarded. Host is the
/// target's, and Content-Length is recomputed by the sender.
const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
    "proxy-connection",
    "http2-settings",
];

/// The end-to-end headers of a request, in order, names lower case.
pub fn end_to_end_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])> + Clone,
) -> Vec<(String, Vec<u8>)> {
    // Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1).
    let mut named: Vec<String> = Vec::new();
    for (name, value) in headers.clone() {
        if name.eq_ignore_ascii_case("connection") {
            named.extend(
                String::from_utf8_lossy(value)
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty()),
            );
        }
    }
    headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .filter(|(n, _)| {
            !HOP_BY_HOP.contains(&n.as_str())
                && !n.starts_with("proxy-")
                && !named.iter().any(|c| c == n)
        })
        .map(|(n, v)| (n, v.to_vec()))
        .collect()
}

/// Backpressure: why ingest must refuse new work now, if it must. `max_bytes` 0 is no limit.
pub fn overloaded(
    backlog: usize,
    max_pending: usize,
    used_bytes: u64,
    max_bytes: u64,
) -> Option<String> {
    if backlog >= max_pending {
        return Some(format!(
            "{backlog} deliveries are pending (store.max_pending is {max_pending}); retry later"
        ));
    }
    if max_bytes > 0 && used_bytes >= max_bytes {
        return Some(format!(
            "the store uses {used_bytes} bytes (hookrelay_store_used_bytes; store.max_bytes is {max_bytes}); retry later, once finished deliveries are pruned"
        ));
    }
    None
}

/// An `Idempotency-Key` must be printable ASCII and at most 255 bytes.
pub fn validate_idempotency_key(key: &str) -> Result<(), Reject> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Reject::new(
            400,
            "invalid_idempotency_key",
            "an idempotency key is 1 to 255 printable ASCII characters",
        ));
    }
    Ok(())
}

/// The body's transfer codings (`Transfer-Encoding` values): only `chunked`, once, is
/// understood. A body sent with another coding (`gzip, chunked`, say) would be stored and
/// delivered still coded, so it is refused with the 501 that RFC 9112 6.1 asks for; `chunked`
/// twice is not a valid message (400).
pub fn check_transfer_encoding<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<(), Reject> {
    let mut chunked = 0;
    for value in values {
        for coding in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if coding.eq_ignore_ascii_case(b"chunked") {
                chunked += 1;
            } else if !coding.is_empty() {
                return Err(Reject::new(
                    501,
                    "unsupported_transfer_encoding",
                    format!(
                        "Transfer-Encoding `{}` is not supported: send the body as it is, with Content-Length or chunked",
                        String::from_utf8_lossy(coding)
                    ),
                ));
            }
        }
    }
    if chunked > 1 {
        return Err(Reject::new(
            400,
            "bad_request",
            "Transfer-Encoding names chunked more than once",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_built_from_its_endpoint_only_as_join_endpoint_makes_it() {
        let base = url::Url::parse("https://u:p@r.example/in/?k=1").unwrap();
        let built = join_endpoint(base.as_str(), "/a?z=2");
        assert!(built_from(&base, &built), "{built}");
        assert!(built_from(&base, &join_endpoint(base.as_str(), "")));
        for other in [
            "https://u:p@r.example/elsewhere/a?k=1",
            "https://u:old@r.example/in/a?k=1",
            "https://r.example/in/a?k=1",
            "https://u:p@r.example/in/a?k=0",
            "https://u:p@r.example/in/a",
            "https://u:p@other.example/in/a?k=1",
        ] {
            assert!(!built_from(&base, other), "{other}");
        }
    }
    use crate::config::Config;

    fn endpoints() -> BTreeMap<String, Endpoint> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[endpoints.orders]\nurl = \"https://r.example/base\"\n[endpoints.q]\nurl = \"https://r.example/in?k=1\"\n",
        )
        .unwrap();
        Config::load_with_env(Some(&path), Vec::new())
            .unwrap()
            .endpoints
    }

    #[test]
    fn only_the_chunked_transfer_coding_is_accepted() {
        let check = |values: &[&str]| {
            check_transfer_encoding(values.iter().map(|v| v.as_bytes()))
                .map_err(|r| (r.status, r.code))
        };
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(check(&["chunked"]), Ok(()));
        assert_eq!(check(&["Chunked "]), Ok(()));
        let unsupported = Err((501, "unsupported_transfer_encoding"));
        assert_eq!(check(&["gzip, chunked"]), unsupported);
        assert_eq!(check(&["chunked", "deflate"]), unsupported);
        assert_eq!(check(&["identity"]), unsupported);
        let twice = Err((400, "bad_request"));
        assert_eq!(check(&["chunked, chunked"]), twice);
        assert_eq!(check(&["chunked", "chunked"]), twice);
    }

    #[test]
    fn routes() {
        let eps = endpoints();
        let url = |t: &str| Ok(Route::UrlPrefix { target: t.into() });
        let ep = |n: &str, t: &str, r: &str| {
            Ok(Route::Endpoint {
                name: n.into(),
                target: t.into(),
                rest: r.into(),
            })
        };
        let err = |status, code| (status, code);
        type Case<'a> = (&'a str, &'a str, Result<Route, (u16, &'a str)>);
        // A name DNS cannot hold (a label over 63 characters) can never be delivered to.
        let long_label = format!("/https://{}.example/", "a".repeat(64));
        let longest_label = format!("/https://{}.example/", "a".repeat(63));
        let cases: Vec<Case> = vec![
            ("POST", long_label.as_str(), Err(err(400, "invalid_target"))),
            ("POST", longest_label.as_str(), url(&longest_label[1..])),
            (
                "POST",
                "/https://r.example/hooks?x=1",
                url("https://r.example/hooks?x=1"),
            ),
            ("PUT", "/http://127.0.0.1:9/a", url("http://127.0.0.1:9/a")),
            ("PATCH", "/HTTPS://R.example/", url("HTTPS://R.example/")),
            (
                "POST",
                "/e/orders/some/path?q=1",
                ep(
                    "orders",
                    "https://r.example/base/some/path?q=1",
                    "/some/path?q=1",
                ),
            ),
            (
                "POST",
                "/e/orders",
                ep("orders", "https://r.example/base", ""),
            ),
            (
                "POST",
                "/e/orders?z=2",
                ep("orders", "https://r.example/base?z=2", "?z=2"),
            ),
            (
                "POST",
                "/e/q/x?z=2",
                ep("q", "https://r.example/in/x?k=1&z=2", "/x?z=2"),
            ),
            (
                "POST",
                "/e/orders/a/../b",
                ep("orders", "https://r.example/base/a/../b", "/a/../b"),
            ),
            (
                "POST",
                "/e/orders/../admin",
                Err(err(400, "invalid_target")),
            ),
            (
                "POST",
                "/e/orders/%2e%2e/admin",
                Err(err(400, "invalid_target")),
            ),
            (
                "POST",
                "/e/orders/x/../../basement",
                Err(err(400, "invalid_target")),
            ),
            // Encoded separators a receiver might decode before resolving `..`.
            (
                "POST",
                "/e/orders/..%2Fadmin",
                Err(err(400, "invalid_target")),
            ),
            (
                "POST",
                "/e/orders/x/..%5cadmin",
                Err(err(400, "invalid_target")),
            ),
            (
                "POST",
                "/e/orders/%2E%2e%2fadmin",
                Err(err(400, "invalid_target")),
            ),
            // In the query they are data.
            (
                "POST",
                "/e/orders/x?next=%2F..%2F",
                ep(
                    "orders",
                    "https://r.example/base/x?next=%2F..%2F",
                    "/x?next=%2F..%2F",
                ),
            ),
            ("POST", "/v1/events", Ok(Route::Envelope)),
            ("GET", "/v1/events", Err(err(405, "method_not_allowed"))),
            (
                "GET",
                "/https://r.example/",
                Err(err(405, "method_not_allowed")),
            ),
            ("DELETE", "/e/orders/x", Err(err(405, "method_not_allowed"))),
            // The method is checked before what the path names: a route that takes no GET
            // answers 405 whatever follows, not 400 or 404.
            ("GET", "/", Err(err(405, "method_not_allowed"))),
            ("HEAD", "/", Err(err(405, "method_not_allowed"))),
            ("DELETE", "/", Err(err(405, "method_not_allowed"))),
            ("OPTIONS", "*", Err(err(405, "method_not_allowed"))),
            ("GET", "/favicon.ico", Err(err(405, "method_not_allowed"))),
            ("GET", "/e/nope/x", Err(err(405, "method_not_allowed"))),
            (
                "GET",
                "/e/orders/../admin",
                Err(err(405, "method_not_allowed")),
            ),
            ("HEAD", "/v1/events", Err(err(405, "method_not_allowed"))),
            ("POST", "/favicon.ico", Err(err(400, "invalid_target"))),
            ("POST", "/e/nope/x", Err(err(404, "unknown_endpoint"))),
            (
                "POST",
                "/ftp://r.example/x",
                Err(err(400, "invalid_target")),
            ),
            ("POST", "/r.example/x", Err(err(400, "invalid_target"))),
            ("POST", "/", Err(err(400, "invalid_target"))),
            ("POST", "/https://", Err(err(400, "invalid_target"))),
            (
                "POST",
                "/http://127.0.0.1:0/x",
                Err(err(400, "invalid_target")),
            ),
            (
                "POST",
                "/https://r.example:00/x",
                Err(err(400, "invalid_target")),
            ),
            (
                "POST",
                "/http://r.example/h i",
                Err(err(400, "invalid_target")),
            ),
            (
                "POST",
                "/http://r.example/h\ti",
                Err(err(400, "invalid_target")),
            ),
            (
                "POST",
                "/https://exa mple.com/",
                Err(err(400, "invalid_target")),
            ),
        ];
        for (method, path, want) in cases {
            let got = route(method, path, &eps).map_err(|r| (r.status, r.code));
            assert_eq!(got, want, "{method} {path}");
        }
        // The refusal does not quote the endpoint's path: it may hold the receiver's token.
        let reject = route("POST", "/e/orders/..", &eps).unwrap_err();
        assert_eq!(reject.code, "invalid_target");
        assert!(
            reject.message.contains("endpoint `orders`"),
            "{}",
            reject.message
        );
        assert!(!reject.message.contains("/base"), "{}", reject.message);
    }

    #[test]
    fn a_405_allows_what_the_route_takes() {
        let eps = endpoints();
        let cases = [
            ("GET", "/v1/events", "POST"),
            ("PUT", "/v1/events?x=1", "POST"),
            ("GET", "/", "POST, PUT, PATCH"),
            ("GET", "/favicon.ico", "POST, PUT, PATCH"),
            ("DELETE", "/e/orders/x", "POST, PUT, PATCH"),
            ("GET", "/e/nope", "POST, PUT, PATCH"),
            ("GET", "/https://r.example/", "POST, PUT, PATCH"),
        ];
        for (method, path, allow) in cases {
            let reject = route(method, path, &eps).unwrap_err();
            assert_eq!(
                (reject.status, reject.allow),
                (405, Some(allow)),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let input: Vec<(&str, &[u8])> = vec![
            ("Content-Type", b"application/json"),
            ("Connection", b"keep-alive, X-Hop"),
            ("X-Hop", b"1"),
            ("Keep-Alive", b"timeout=5"),
            ("TE", b"trailers"),
            ("Trailer", b"x"),
            ("Transfer-Encoding", b"chunked"),
            ("Upgrade", b"h2c"),
            ("Proxy-Authorization", b"secret"),
            ("Host", b"127.0.0.1:7700"),
            ("Content-Length", b"12"),
            ("X-Signature", b"abc"),
            ("Idempotency-Key", b"k1"),
        ];
        let got = end_to_end_headers(input.iter().map(|(n, v)| (*n, *v)));
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-signature", "idempotency-key"]);
        assert_eq!(got[1].1, b"abc");
    }

    #[test]
    fn overload_table() {
        let cases = [
            (0, 10, 0, 0, false),
            (9, 10, 0, 0, false),
            (10, 10, 0, 0, true),
            (11, 10, 0, 0, true),
            (0, 10, 1 << 40, 0, false),
            (0, 10, 99, 100, false),
            (0, 10, 100, 100, true),
        ];
        for (backlog, max_pending, used, max_bytes, want) in cases {
            assert_eq!(
                overloaded(backlog, max_pending, used, max_bytes).is_some(),
                want,
                "{backlog}/{max_pending} {used}/{max_bytes}"
            );
        }
    }

    #[test]
    fn idempotency_keys() {
        assert!(validate_idempotency_key("ord-1").is_ok());
        assert!(validate_idempotency_key("").is_err());
        assert!(validate_idempotency_key(&"k".repeat(256)).is_err());
        assert!(validate_idempotency_key("tab\there").is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            // Brief in CI; the point is breadth of shapes, not depth.
            ProptestConfig::with_cases(256)
        }

        /// Paths shaped like ingest request lines: mode prefixes, URL-ish pieces, junk.
        fn path() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("/".to_string()),
                Just("/e/".to_string()),
                Just("/e/orders".to_string()),
                Just("/v1/events".to_string()),
                Just("http://".to_string()),
                Just("https://".to_string()),
                Just("?".to_string()),
                Just("[::1]".to_string()),
                Just("0x7f.1".to_string()),
                Just("%00".to_string()),
                Just(":".to_string()),
                Just("@".to_string()),
                "[a-zA-Z0-9./:?&=#%\\[\\]@-]{0,12}",
                any::<String>(),
            ];
            proptest::collection::vec(piece, 0..6).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn route_never_panics_and_accepted_targets_are_valid(
                method in prop_oneof![
                    Just("POST".to_string()),
                    Just("GET".to_string()),
                    Just("PUT".to_string()),
                    "[A-Z]{0,7}",
                ],
                p in path(),
            ) {
                let eps = endpoints();
                let method = method.as_str();
                let result = route(method, &p, &eps);
                // No route takes a method other than these: 405 whatever the path.
                if !FORWARD_METHODS.contains(&method) {
                    prop_assert_eq!(result.as_ref().map_err(|r| r.status), Err(405), "{} {}", method, p);
                }
                if let Ok(route) = result {
                    match route {
                        Route::UrlPrefix { target } | Route::Endpoint { target, .. } => {
                            prop_assert!(FORWARD_METHODS.contains(&method));
                            let url = validate_target(&target);
                            prop_assert!(url.is_ok(), "{target}");
                            let url = url.unwrap();
                            prop_assert!(matches!(url.scheme(), "http" | "https"));
                            prop_assert!(url.host_str().is_some_and(|h| !h.is_empty()));
                        }
                        Route::Envelope => prop_assert_eq!(method, "POST"),
                    }
                }
            }

            #[test]
            fn validate_target_never_panics(t in path()) {
                if let Ok(url) = validate_target(&t) {
                    // Whatever passes has a host the egress guard can classify.
                    prop_assert!(crate::egress::target_host(&url).is_some());
                    let _ = crate::egress::EgressPolicy::strict().check_url(&url);
                }
            }

            #[test]
            fn join_endpoint_keeps_the_base_and_every_query(
                base_path in "(/[a-z0-9]{0,5}){0,3}",
                base_q in proptest::option::of("[a-z0-9=]{1,6}"),
                rest_path in "(/[a-z0-9]{0,5}){0,3}",
                rest_q in proptest::option::of("[a-z0-9=]{1,6}"),
            ) {
                let base = format!("https://r.example{base_path}{}", base_q.as_ref().map(|q| format!("?{q}")).unwrap_or_default());
                let rest = format!("{rest_path}{}", rest_q.as_ref().map(|q| format!("?{q}")).unwrap_or_default());
                let joined = join_endpoint(&base, &rest);
                prop_assert!(joined.starts_with("https://r.example"));
                prop_assert!(validate_target(&joined).is_ok(), "{joined}");
                let (path, query) = split_query(&joined);
                let prefix = format!("https://r.example{}", base_path.trim_end_matches('/'));
                prop_assert!(path.starts_with(&prefix), "{} does not start with {}", path, prefix);
                for q in [base_q, rest_q].into_iter().flatten() {
                    prop_assert!(query.is_some_and(|jq| jq.split('&').any(|p| p == q)), "{joined} lost {q}");
                }
            }

            #[test]
            fn end_to_end_headers_drop_every_hop_by_hop_header(
                headers in proptest::collection::vec(
                    (prop_oneof![
                        Just("Connection".to_string()),
                        Just("Keep-Alive".to_string()),
                        Just("Transfer-Encoding".to_string()),
                        Just("Proxy-Authorization".to_string()),
                        Just("Host".to_string()),
                        Just("X-Custom".to_string()),
                        "[A-Za-z-]{1,10}",
                    ], proptest::collection::vec(any::<u8>(), 0..16)),
                    0..12,
                ),
            ) {
                let pairs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
                let out = end_to_end_headers(pairs.iter().copied());
                prop_assert!(out.len() <= headers.len());
                for (name, _) in &out {
                    prop_assert_eq!(name, &name.to_ascii_lowercase());
                    prop_assert!(!HOP_BY_HOP.contains(&name.as_str()));
                    prop_assert!(!name.starts_with("proxy-"));
                }
            }
        }
    }
}
