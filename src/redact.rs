//! What looks like a credential, and a target URL as it may be shown: the one place that
//! decides what listings, logs, the delivery detail and `config show` hide.
//!
//! Pure functions. Redaction errs on the side of hiding: a header or query parameter is hidden
//! when its name looks like it carries a credential or its value looks like one. A path segment
//! is hidden when it follows a segment that names a credential (`/with/key/XXXX`) or where a
//! well-known incoming-webhook service keeps its token (Slack, Discord, Microsoft Teams,
//! Zapier). What cannot be recognised is not hidden: a token that is an arbitrary path segment
//! elsewhere is shown, since nothing tells it from any other segment.

use std::borrow::Cow;

/// Header names hidden whatever their value.
const SECRET_NAMES: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];
/// Parts of names that mark a credential (`x-api-key`, `x-webhook-secret`,
/// `x-hub-signature-256`, `x-auth-token`, `access_token`...).
const SECRET_PARTS: &[&str] = &[
    "auth",
    "secret",
    "token",
    "key",
    "signature",
    "password",
    "passwd",
    "credential",
    "session",
    "cookie",
];
/// Names that contain a secret-looking part but are not secrets.
const PUBLIC_NAMES: &[&str] = &["idempotency-key"];
/// Value prefixes of credentials, compared case-insensitively.
const SECRET_VALUE_SCHEMES: &[&str] = &["bearer", "basic", "digest", "token"];
/// Query parameter names that carry a credential without saying so (Azure Functions' `code`,
/// a shared access signature's `sig`, the short forms of a password).
const SECRET_QUERY_NAMES: &[&str] = &["code", "sig", "pass", "pwd"];

/// Path segments after which the next segment is a credential (`/with/key/XXXX`, IFTTT's form),
/// compared case-insensitively.
const SECRET_SEGMENTS: &[&str] = &[
    "key",
    "apikey",
    "api_key",
    "api-key",
    "token",
    "access_token",
    "secret",
    "password",
];

/// What a hidden query value or userinfo reads as in a shown target.
pub const HIDDEN: &str = "***";

/// Whether a header (or a query parameter) named `name` with `value` may carry a credential.
pub fn is_secret(name: &str, value: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if PUBLIC_NAMES.contains(&name.as_str()) {
        return false;
    }
    // The scheme word of `Bearer abc`, `Basic\tabc`: any whitespace ends it.
    let scheme = value
        .trim_start()
        .split(|c: char| c.is_whitespace())
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let has_credentials = value.trim_start().len() > scheme.len();
    SECRET_NAMES.contains(&name.as_str())
        || SECRET_PARTS.iter().any(|part| name.contains(part))
        || (has_credentials && SECRET_VALUE_SCHEMES.contains(&scheme.as_str()))
}

/// Whether the configuration value at `path` (for example `["admin", "token"]` or
/// `["endpoints", "orders", "headers", "Authorization"]`) must not be printed: by `config show`,
/// and in a configuration error.
pub fn is_secret_key(path: &[String]) -> bool {
    let named_secret = |segment: &str| {
        let s = segment.to_ascii_lowercase();
        ["token", "secret", "secrets", "password"]
            .iter()
            .any(|w| s == *w || s.ends_with(&format!("_{w}")))
    };
    let credential_header = |name: &str| {
        let n = name.to_ascii_lowercase();
        [
            "authorization",
            "token",
            "secret",
            "api-key",
            "apikey",
            "cookie",
        ]
        .iter()
        .any(|w| n.contains(w))
    };
    path.iter().enumerate().any(|(i, segment)| {
        named_secret(segment) || (i > 0 && path[i - 1] == "headers" && credential_header(segment))
    })
}

/// Whether a query parameter may carry a credential.
fn is_secret_param(name: &str, value: &str) -> bool {
    is_secret(name, value) || SECRET_QUERY_NAMES.contains(&name.to_ascii_lowercase().as_str())
}

/// `target` as it may be shown or logged: its userinfo (`user:password@`) as `***@`, and the
/// value of each query parameter that looks like a credential as `***` (`?api_key=***`).
/// Credentials stay stored, for delivery; they are never shown.
///
/// The userinfo is found the way delivery finds it, by parsing the URL (which, for http(s),
/// also takes `http:///u:p@h`). A target with something to hide is shown as the parsed URL
/// (host in lower case, a default port left out, its query and fragment as the parser wrote
/// them, each hidden value replaced); a target with nothing to hide is returned as it is. The
/// fragment is treated like the query (`#access_token=...`), though it is never sent.
pub fn target(target: &str) -> Cow<'_, str> {
    // Without an `@` there is no userinfo, without a `?` or `#` no query or fragment, and
    // without one of the path markers no path to hide: no parse on the listings' hot path.
    if !target.contains(['@', '?', '#']) && !may_hide_path(target) {
        return target.into();
    }
    let Ok(u) = url::Url::parse(target) else {
        return hide_by_text(target).map_or(target.into(), Cow::Owned);
    };
    if !matches!(u.scheme(), "http" | "https") {
        return hide_by_text(target).map_or(target.into(), Cow::Owned);
    }
    let userinfo = !u.username().is_empty() || u.password().is_some();
    let path = hide_path(u.host_str().unwrap_or_default(), u.path());
    let query = u.query().and_then(hide_params);
    let fragment = u.fragment().and_then(hide_params);
    match (userinfo, path, query, fragment) {
        (false, None, None, None) => target.into(),
        (userinfo, path, query, fragment) => {
            let mut shown = format!("{}://", u.scheme());
            if userinfo {
                shown.push_str(HIDDEN);
                shown.push('@');
            }
            shown.push_str(&u[url::Position::BeforeHost..url::Position::BeforePath]);
            shown.push_str(path.as_deref().unwrap_or(u.path()));
            if let Some(q) = query.as_deref().or(u.query()) {
                shown.push('?');
                shown.push_str(q);
            }
            if let Some(f) = fragment.as_deref().or(u.fragment()) {
                shown.push('#');
                shown.push_str(f);
            }
            shown.into()
        }
    }
}

/// Whether `target` could have a path segment to hide: a cheap test before any parse, without
/// allocating (it runs for every row of a listing). Backslashes count as slashes, as the URL
/// parser reads them in an http(s) path.
fn may_hide_path(target: &str) -> bool {
    let contains = |needle: &str| {
        target
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    if ["slack.com", "discord", "office.com", "zapier.com"]
        .iter()
        .any(|host| contains(host))
    {
        return true;
    }
    let mut after_name = false;
    for segment in target.split(['/', '\\']) {
        if after_name && !segment.is_empty() {
            return true;
        }
        after_name = SECRET_SEGMENTS
            .iter()
            .any(|name| segment.eq_ignore_ascii_case(name));
    }
    false
}

/// `path` with each segment that holds a credential as [`HIDDEN`]; `None` when none does.
/// `host` is in lower case (as parsed).
fn hide_path(host: &str, path: &str) -> Option<String> {
    // `hooks.slack.com.` is the same host as `hooks.slack.com`.
    let host = host.strip_suffix('.').unwrap_or(host);
    let segments: Vec<&str> = path.split('/').collect();
    let named = |i: usize, name: &str| {
        segments
            .get(i)
            .is_some_and(|s| s.eq_ignore_ascii_case(name))
    };
    let in_domain = |domain: &str| {
        host == domain
            || host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.ends_with('.'))
    };
    // `segments[0]` is the empty string before the path's leading `/`.
    let last = segments.iter().rposition(|s| !s.is_empty()).unwrap_or(0);
    let mut hide = vec![false; segments.len()];
    for i in 1..segments.len() {
        let after = |name: &str| named(i - 1, name);
        hide[i] = !segments[i].is_empty()
            && (SECRET_SEGMENTS.iter().any(|name| after(name))
                // Slack: /services/T0/B0/SECRET, /triggers/.../SECRET, /workflows/.../SECRET.
                || (host == "hooks.slack.com" && i == last && i >= 2)
                // Discord: /api[/v10]/webhooks/ID/TOKEN[/slack|/github].
                || ((in_domain("discord.com") || in_domain("discordapp.com"))
                    && i >= 2
                    && named(i - 2, "webhooks"))
                // Microsoft Teams connectors: .../IncomingWebhook/ID/SECRET-GUID[/...], on
                // TENANT.webhook.office.com or, in their older form, outlook.office.com.
                || ((in_domain("webhook.office.com")
                    || host == "outlook.office.com"
                    || host == "outlook.office365.com")
                    && segments[..i]
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case("IncomingWebhook")))
                // Zapier: /hooks/catch/ACCOUNT/HOOK/.
                || (host == "hooks.zapier.com"
                    && i == 4
                    && named(1, "hooks")
                    && named(2, "catch")));
    }
    if !hide.contains(&true) {
        return None;
    }
    let shown: Vec<&str> = segments
        .iter()
        .zip(&hide)
        .map(|(s, h)| if *h { HIDDEN } else { s })
        .collect();
    Some(shown.join("/"))
}

/// `query` with the value of each credential-looking parameter as [`HIDDEN`]; `None` when
/// none is.
/// For text with a `scheme:` and slashes that is not an http(s) URL as parsed (another scheme,
/// no host, a bad port): userinfo, credential-looking query and fragment values, and the path
/// tokens `hide_path` knows, hidden by the text alone, so an error about the value does not
/// print what it was meant to keep. None if nothing was (or the text has no `scheme:` followed
/// by a slash or backslash: an e-mail address is not userinfo).
fn hide_by_text(text: &str) -> Option<String> {
    let colon = text.find(':')?;
    let scheme = &text[..colon];
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let after = &text[colon + 1..];
    // The URL parser takes any mix of slashes and backslashes after an http(s) scheme.
    let slashes = after.len() - after.trim_start_matches(['/', '\\']).len();
    if !scheme_ok || slashes == 0 {
        return None;
    }
    let (head, rest) = text.split_at(colon + 1 + slashes);
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    let (path, rest) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    let mut tail = String::new();
    let tail_hidden = push_tail(&mut tail, rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host = match host_port.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host_port,
    };
    let user = authority.contains('@');
    let path_hidden = hide_path(&host.to_ascii_lowercase(), &path.replace('\\', "/"));
    if !user && path_hidden.is_none() && !tail_hidden {
        return None;
    }
    let mut shown = head.to_string();
    if user {
        shown.push_str(HIDDEN);
        shown.push('@');
        shown.push_str(host_port);
    } else {
        shown.push_str(authority);
    }
    shown.push_str(path_hidden.as_deref().unwrap_or(path));
    shown.push_str(&tail);
    Some(shown)
}

/// Appends `rest` (empty, or a `?query` and/or `#fragment`) to `out` with credential-looking
/// parameter values hidden; whether any was.
fn push_tail(out: &mut String, rest: &str) -> bool {
    let (query, fragment) = match rest.strip_prefix('?') {
        Some(q) => q
            .split_once('#')
            .map_or((Some(q), None), |(q, f)| (Some(q), Some(f))),
        None => (None, rest.strip_prefix('#')),
    };
    let mut hid = false;
    for (mark, part) in [('?', query), ('#', fragment)] {
        if let Some(part) = part {
            let hidden = hide_params(part);
            hid |= hidden.is_some();
            out.push(mark);
            out.push_str(hidden.as_deref().unwrap_or(part));
        }
    }
    hid
}

/// A configuration value meant to be a URL, as `config show` and `config check` print it: as
/// [`target`] shows it when it is one; when it is not (no scheme, a mistyped one), everything
/// before the last `@` ahead of its query is taken for userinfo and hidden, and so are
/// credential-looking query and fragment values. A value that is not a URL has nothing that
/// tells its parts apart, so this hides more rather than less.
pub fn url_value(text: &str) -> Cow<'_, str> {
    let shown = target(text);
    if shown != text || url::Url::parse(text).is_ok_and(|u| u.has_host()) {
        return shown;
    }
    let head_end = text.find(['?', '#']).unwrap_or(text.len());
    let (head, rest) = text.split_at(head_end);
    let head = match head.rfind('@') {
        Some(i) => Cow::Owned(format!("{HIDDEN}{}", &head[i..])),
        None => Cow::Borrowed(head),
    };
    let mut out = head.into_owned();
    push_tail(&mut out, rest);
    if out == text {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(out)
    }
}

fn hide_params(query: &str) -> Option<String> {
    let mut hid = false;
    let parts: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let decode = |s: &str| -> String {
                url::form_urlencoded::parse(s.as_bytes())
                    .next()
                    .map(|(k, _)| k.into_owned())
                    .unwrap_or_default()
            };
            if !value.is_empty() && is_secret_param(&decode(name), &decode(value)) {
                hid = true;
                format!("{name}={HIDDEN}").into()
            } else {
                part.into()
            }
        })
        .collect();
    hid.then(|| parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised() {
        let cases = [
            ("authorization", "Bearer abc", true),
            ("proxy-authorization", "x", true),
            ("cookie", "a=b", true),
            ("x-api-key", "k", true),
            ("x-webhook-secret", "s", true),
            ("x-hub-signature-256", "sha256=00", true),
            ("x-auth-token", "t", true),
            ("x-custom", "Bearer abc", true),
            ("x-custom", "  basic Zm9vOmJhcg==", true),
            ("x-custom", "Bearer\tabc", true),
            ("x-custom", "token", false),
            ("idempotency-key", "ord-1", false),
            ("content-type", "application/json", false),
            ("user-agent", "app/1.0", false),
            ("x-request-id", "r-1", false),
        ];
        for (name, value, secret) in cases {
            assert_eq!(is_secret(name, value), secret, "{name}: {value}");
        }
    }

    #[test]
    fn targets_hide_userinfo_and_credential_parameters_and_nothing_else() {
        let cases = [
            ("https://u:p@h.example/x", "https://***@h.example/x"),
            (
                "http://tok@127.0.0.1:9/a@b?c=@",
                "http://***@127.0.0.1:9/a@b?c=@",
            ),
            ("http://a:b@c@h/", "http://***@h/"),
            ("HTTPS://u:p@[::1]:8443", "https://***@[::1]:8443/"),
            // Extra slashes are skipped by the parser, and so by delivery.
            ("http:///u:p@h.example/x", "http://***@h.example/x"),
            ("http://:p@h.example/", "http://***@h.example/"),
            ("https://h.example/p@q", "https://h.example/p@q"),
            ("https://h.example?u=a@b", "https://h.example?u=a@b"),
            // A backslash ends the authority for the parser: no userinfo here.
            ("http://h\\@evil.example/x", "http://h\\@evil.example/x"),
            ("not a url @", "not a url @"),
            // Query parameters: the value hidden, the rest of the query kept as written.
            (
                "https://h.example/h?api_key=k3y&v=a%20b+c",
                "https://h.example/h?api_key=***&v=a%20b+c",
            ),
            (
                "https://f.example.net/api/x?code=AzK3y#frag",
                "https://f.example.net/api/x?code=***#frag",
            ),
            (
                "https://r.example/x?user=u&pass=PSECRET&PWD=P2&passage=kept",
                "https://r.example/x?user=u&pass=***&PWD=***&passage=kept",
            ),
            (
                "https://h.example/?x=1&ACCESS_TOKEN=t&sig=s&sv=2024&auth",
                "https://h.example/?x=1&ACCESS_TOKEN=***&sig=***&sv=2024&auth",
            ),
            // A name percent-encoded is read decoded; a value that is a credential by its
            // scheme is hidden whatever the name.
            (
                "https://h.example/?api%5Fkey=k&h=Bearer%20abc",
                "https://h.example/?api%5Fkey=***&h=***",
            ),
            (
                "https://u@h.example/p?token=t",
                "https://***@h.example/p?token=***",
            ),
            (
                "https://h.example/p?page=2&sort=asc",
                "https://h.example/p?page=2&sort=asc",
            ),
            ("https://h.example/p?", "https://h.example/p?"),
            (
                "https://h.example/cb#access_token=t0k&state=s",
                "https://h.example/cb#access_token=***&state=s",
            ),
            // Shown as parsed once something is hidden.
            (
                "https://H.example:443/p?token=t",
                "https://h.example/p?token=***",
            ),
            // Not an http(s) URL (a mistyped configuration value): hidden by the text alone.
            (
                "ftp://u:p@h.example/?token=t",
                "ftp://***@h.example/?token=***",
            ),
            ("https://user:PASSW0RD@/hook", "https://***@/hook"),
            (
                "ftp://h.example/p?page=2#access_token=t",
                "ftp://h.example/p?page=2#access_token=***",
            ),
            ("ftp://h.example/p@q", "ftp://h.example/p@q"),
            ("ops@example.com", "ops@example.com"),
            ("note: see a@b", "note: see a@b"),
            // One slash or backslashes, with a port the parser refuses.
            ("https:/user:secret@host:99999/x", "https:/***@host:99999/x"),
            ("http:\\user:secret@h:99999/", "http:\\***@h:99999/"),
            (
                "https://hooks.slack.com:99999/services/T0/B0/XyZsecret",
                "https://hooks.slack.com:99999/services/T0/B0/***",
            ),
        ];
        for (given, shown) in cases {
            assert_eq!(target(given), shown, "{given}");
        }
    }

    /// A configuration URL that does not parse as one still has its credentials hidden.
    #[test]
    fn url_values_that_are_not_urls_hide_what_looks_like_credentials() {
        let cases = [
            (
                "//u:PASSWORD5@host/?access_token=QUERYSECRET5",
                "***@host/?access_token=***",
            ),
            ("carol:PASSWORD4@host?sig=X", "***@host?sig=***"),
            (
                "host/?access_token=X&page=2",
                "host/?access_token=***&page=2",
            ),
            ("127.0.0.1:38251/x?token=X", "127.0.0.1:38251/x?token=***"),
            ("http//u:PW@host/?token=X", "***@host/?token=***"),
            ("mailto:PW@x?key=X", "***@x?key=***"),
            ("host/path", "host/path"),
            // A URL is shown as `target` shows it.
            ("https://u:p@h.example/x", "https://***@h.example/x"),
            ("https://h.example/p@q", "https://h.example/p@q"),
        ];
        for (given, shown) in cases {
            assert_eq!(url_value(given), shown, "{given}");
        }
    }

    /// Tokens that well-known services keep in the path, and segments after a credential's
    /// name; look-alikes elsewhere are shown.
    #[test]
    fn path_tokens_of_known_forms_are_hidden() {
        let cases = [
            (
                "https://hooks.slack.com/services/T0001/B0001/XXXXXXXXXXXXXXXXXXXXXXXX",
                "https://hooks.slack.com/services/T0001/B0001/***",
            ),
            (
                "https://hooks.slack.com/triggers/T0001/123/abcdef0123/",
                "https://hooks.slack.com/triggers/T0001/123/***/",
            ),
            (
                "https://discord.com/api/webhooks/1234567890/tok-EN_1?wait=true",
                "https://discord.com/api/webhooks/1234567890/***?wait=true",
            ),
            (
                "https://ptb.discordapp.com/api/v10/webhooks/123/tok/slack",
                "https://ptb.discordapp.com/api/v10/webhooks/123/***/slack",
            ),
            (
                "https://acme.webhook.office.com/webhookb2/g1@g2/IncomingWebhook/h3x/g4/V2k",
                "https://acme.webhook.office.com/webhookb2/g1@g2/IncomingWebhook/***/***/***",
            ),
            (
                "https://hooks.zapier.com/hooks/catch/123456/abcdef/",
                "https://hooks.zapier.com/hooks/catch/123456/***/",
            ),
            (
                "https://maker.ifttt.com/trigger/deploy/with/key/s3cr3t",
                "https://maker.ifttt.com/trigger/deploy/with/key/***",
            ),
            (
                "https://u:p@h.example:8443/Token/t0k/x?api_key=k",
                "https://***@h.example:8443/Token/***/x?api_key=***",
            ),
            // The parser's reading: a backslash is a slash, a host's trailing dot the same host.
            (
                "https://h.example/api\\key\\s3cr3t",
                "https://h.example/api/key/***",
            ),
            (
                "https://hooks.slack.com./services/T0/B0/SECRET",
                "https://hooks.slack.com./services/T0/B0/***",
            ),
            (
                "https://outlook.office.com/webhook/g1@g2/IncomingWebhook/id/g3",
                "https://outlook.office.com/webhook/g1@g2/IncomingWebhook/***/***",
            ),
            // Look-alikes: another host, or the name at the end with nothing after it.
            (
                "https://notdiscord.com/api/webhooks/1/2",
                "https://notdiscord.com/api/webhooks/1/2",
            ),
            (
                "https://hooks.slack.com.evil.example/services/T/B/X",
                "https://hooks.slack.com.evil.example/services/T/B/X",
            ),
            ("https://h.example/keys/1/", "https://h.example/keys/1/"),
            ("https://h.example/a/key/", "https://h.example/a/key/"),
            ("https://hooks.slack.com/", "https://hooks.slack.com/"),
            (
                "https://hooks.zapier.com/hooks/standard/1/2/",
                "https://hooks.zapier.com/hooks/standard/1/2/",
            ),
        ];
        for (given, shown) in cases {
            assert_eq!(target(given), shown, "{given}");
        }
    }

    #[test]
    fn a_target_with_nothing_to_hide_is_not_copied() {
        for t in [
            "https://h.example/p",
            "https://h.example/p?page=2",
            "https://discord.com/channels/1/2",
        ] {
            assert!(matches!(target(t), Cow::Borrowed(_)), "{t}");
        }
    }
}
