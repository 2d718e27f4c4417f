//! Human output of the CLI: aligned tables and short summaries built from the API's JSON.
//!
//! Pure functions from JSON values to text, so the shape of the output is tested without a
//! server. `--json` bypasses this file entirely.

use serde_json::Value;

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Text from the sidecar (a pause reason, a response snippet, a header) as it may reach a
/// terminal: control characters other than newline and tab, and the bidirectional formatting
/// characters (which reorder what follows them on the line), are written as escapes
/// (`\u{1b}`, `\u{202e}`), so stored text cannot move the cursor, recolour or retitle the
/// operator's terminal, or disguise a line.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{061c}')
    };
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if unsafe_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// A stored value (a reason, a header) on one line of output: its line breaks written as `\n`
/// and `\r`, so it cannot start a line of its own that reads as the CLI's.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    let breaks = |c: char| {
        matches!(
            c,
            '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
        )
    };
    if !text.contains(breaks) {
        return text.into();
    }
    text.chars()
        .map(|c| match c {
            '\n' => "\\n".to_string(),
            '\r' => "\\r".to_string(),
            c if breaks(c) => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect::<String>()
        .into()
}

/// A JSON scalar as a cell: strings bare (on one line), null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => one_line(s).into_owned(),
        other => other.to_string(),
    }
}

pub fn deliveries(page: &Value) -> String {
    let rows: Vec<Vec<String>> = page["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                cell(&d["id"]),
                cell(&d["status"]),
                cell(&d["attempt_count"]),
                cell(&d["last_classification"]),
                cell(&d["created_at"]),
                cell(&d["target"]),
            ]
        })
        .collect();
    let mut out = table(
        &["ID", "STATUS", "ATTEMPTS", "LAST", "CREATED", "TARGET"],
        &rows,
    );
    if let Some(c) = page["next_cursor"].as_str() {
        out.push_str(&format!("more: --cursor {c}\n"));
    }
    out
}

/// `hookrelay endpoints list`: one row per endpoint, then the public keys of its ed25519
/// secrets (what its receiver needs), then names disabled by a 410 that are no longer
/// configured.
pub fn endpoints(v: &Value) -> String {
    let list = v["data"].as_array().cloned().unwrap_or_default();
    let strings = |a: &Value| -> Vec<String> {
        a.as_array()
            .into_iter()
            .flatten()
            .map(cell)
            .collect::<Vec<_>>()
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            let mut events = strings(&e["events"]);
            if e["notify"] == Value::Bool(true) {
                events.push("(hookrelay's own events)".into());
            }
            let signing: Vec<String> = e["signing"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| cell(&k["scheme"]))
                .collect();
            vec![
                cell(&e["name"]),
                if e["disabled"] == Value::Bool(true) {
                    "disabled (410)".into()
                } else {
                    "enabled".into()
                },
                if events.is_empty() {
                    "-".into()
                } else {
                    events.join(",")
                },
                if signing.is_empty() {
                    "-".into()
                } else {
                    signing.join(",")
                },
                cell(&e["url"]),
            ]
        })
        .collect();
    let mut out = if rows.is_empty() {
        "no endpoints are configured ([endpoints.NAME] in the configuration)\n".to_string()
    } else {
        table(&["NAME", "STATE", "EVENTS", "SIGNING", "URL"], &rows)
    };
    for e in &list {
        for k in e["signing"].as_array().into_iter().flatten() {
            if let Some(public) = k["public_key"].as_str() {
                out.push_str(&format!("{}: public key {public}\n", cell(&e["name"])));
            }
        }
    }
    let gone = strings(&v["disabled_not_configured"]);
    if !gone.is_empty() {
        out.push_str(&format!(
            "disabled by a 410 and no longer configured: {}\n",
            gone.join(", ")
        ));
    }
    out
}

pub fn delivery(d: &Value) -> String {
    let mut out = String::new();
    for key in [
        "id",
        "status",
        "method",
        "target",
        "endpoint",
        "event_id",
        "idempotency_key",
        "created_at",
        "next_attempt_at",
        "finished_at",
        "attempt_count",
        "last_classification",
        "last_status_code",
        "replay_of",
        "batch_id",
    ] {
        out.push_str(&format!("{key:<20} {}\n", cell(&d[key])));
    }
    let attempts: Vec<Vec<String>> = d["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                cell(&a["number"]),
                cell(&a["started_at"]),
                format!("{}ms", cell(&a["duration_ms"])),
                cell(&a["status_code"]),
                cell(&a["classification"]),
                cell(&a["error"]),
            ]
        })
        .collect();
    if !attempts.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["#", "STARTED", "TOOK", "HTTP", "CLASSIFICATION", "ERROR"],
            &attempts,
        ));
    }
    out
}

pub fn batch(b: &Value) -> String {
    let created = b["created"].as_array().map_or(0, Vec::len);
    let skipped = b["skipped"].as_array().map_or(0, Vec::len);
    let mut out = format!(
        "batch {} ({}) at {}: requested {}, {} {}, skipped {}\n",
        cell(&b["id"]),
        cell(&b["status"]),
        cell(&b["created_at"]),
        cell(&b["requested"]),
        if b["dry_run"] == true {
            "would create"
        } else {
            "created"
        },
        created,
        skipped
    );
    if let Some(r) = b["reason"].as_str() {
        out.push_str(&format!("reason: {}\n", one_line(r)));
    }
    let mut rows: Vec<Vec<String>> = b["created"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| vec![cell(&c["source"]), cell(&c["delivery"]), String::new()])
        .collect();
    rows.extend(
        b["skipped"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| vec![cell(&s["id"]), "-".into(), cell(&s["reason"])]),
    );
    if !rows.is_empty() {
        out.push_str(&table(&["SOURCE", "NEW DELIVERY", "SKIPPED"], &rows));
    }
    out
}

pub fn batches(page: &Value) -> String {
    let rows: Vec<Vec<String>> = page["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            vec![
                cell(&b["id"]),
                cell(&b["status"]),
                cell(&b["created_at"]),
                cell(&b["requested"]),
                b["created"].as_array().map_or(0, Vec::len).to_string(),
                b["skipped"].as_array().map_or(0, Vec::len).to_string(),
                cell(&b["reason"]),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "STATUS",
            "CREATED_AT",
            "REQUESTED",
            "CREATED",
            "SKIPPED",
            "REASON",
        ],
        &rows,
    );
    if let Some(c) = page["next_cursor"].as_str() {
        out.push_str(&format!("more: --cursor {c}\n"));
    }
    out
}

pub fn pause(p: &Value) -> String {
    let what = p["host"]
        .as_str()
        .map_or("delivery".to_string(), |h| format!("host {h}"));
    if p["paused"] == true {
        format!(
            "{what} paused since {} ({})\n",
            cell(&p["since"]),
            p["reason"]
                .as_str()
                .map_or("no reason given".into(), one_line)
        )
    } else {
        format!("{what} running\n")
    }
}

/// `pause` is `GET /v1/pause`'s answer (asked for only when `stats` says delivery is paused).
pub fn status(stats: &Value, hosts: &Value, health: &Value, pause: Option<&Value>) -> String {
    let mut out = String::new();
    let paused = stats["paused"] == true;
    if paused {
        let since = pause
            .and_then(|p| p["since"].as_str())
            .map_or(String::new(), |t| format!(" since {t}"));
        let reason = pause
            .and_then(|p| p["reason"].as_str())
            .map_or(" (no reason given)".to_string(), |r| {
                format!(": {}", one_line(r))
            });
        out.push_str(&format!("delivery: PAUSED{since}{reason}\n"));
    } else {
        out.push_str("delivery: running\n");
    }
    let counts = &stats["counts"];
    let rows = vec![
        ["pending", "in_progress", "delivered", "failed", "cancelled"]
            .iter()
            .map(|k| cell(&counts[k]))
            .collect::<Vec<_>>(),
    ];
    out.push_str(&table(
        &["PENDING", "IN_PROGRESS", "DELIVERED", "FAILED", "CANCELLED"],
        &rows,
    ));
    out.push_str(&format!(
        "oldest pending: {}\n",
        stats["oldest_pending_age_seconds"]
            .as_u64()
            .map_or("-".to_string(), |s| format!("{s}s ago"))
    ));
    let disabled: Vec<&str> = health["disabled_endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !disabled.is_empty() {
        out.push_str(&format!(
            "disabled endpoints (410 Gone; `hookrelay endpoints enable NAME`): {}\n",
            disabled.join(", ")
        ));
    }
    let hosts: Vec<Vec<String>> = hosts["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            vec![
                cell(&h["host"]),
                cell(&h["pending"]),
                cell(&h["in_progress"]),
                host_state(h, paused),
                h["rate_limit"].as_str().unwrap_or("-").to_string(),
            ]
        })
        .collect();
    if !hosts.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["HOST", "PENDING", "IN_PROGRESS", "STATE", "RATE_LIMIT"],
            &hosts,
        ));
    }
    out
}

/// What holds a host, if anything: its pause (or the global one), its circuit, a
/// `Retry-After`, a disabled endpoint.
fn host_state(h: &Value, globally_paused: bool) -> String {
    let mut parts = Vec::new();
    if h["paused"] == true {
        // Its reason, cut short to keep the table readable (`status --json` has it whole).
        parts.push(match h["pause_reason"].as_str() {
            Some(r) if r.chars().count() > 40 => {
                format!(
                    "paused: {}…",
                    one_line(&r.chars().take(40).collect::<String>())
                )
            }
            Some(r) => format!("paused: {}", one_line(r)),
            None => "paused".to_string(),
        });
    } else if globally_paused {
        parts.push("held by the global pause".to_string());
    }
    match h["circuit"].as_str() {
        Some("open") => parts.push(match h["next_probe_at"].as_str() {
            Some(at) => format!("circuit open (probe at {at})"),
            None => "circuit open".into(),
        }),
        Some("half_open") => parts.push("circuit half-open (probing)".into()),
        _ => {}
    }
    if let Some(until) = h["retry_after_until"].as_str() {
        parts.push(format!("Retry-After until {until}"));
    }
    if let Some(n) = h["held_for_disabled_endpoint"].as_u64().filter(|n| *n > 0) {
        parts.push(format!("{n} held for a disabled endpoint"));
    }
    if parts.is_empty() {
        "running".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["xxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxxx  1\ny    22\n");
    }

    #[test]
    fn endpoints_show_public_keys_and_names_disabled_but_gone() {
        let v = json!({"data": [
            {"name": "orders", "disabled": true, "events": ["order.*"], "url": "https://r/",
             "signing": [{"scheme": "v1a", "public_key": "whpk_X"}, {"scheme": "v1", "public_key": null}]}
        ], "disabled_not_configured": ["old"]});
        let text = endpoints(&v);
        assert!(
            text.contains("orders  disabled (410)  order.*  v1a,v1   https://r/"),
            "{text}"
        );
        assert!(text.contains("orders: public key whpk_X\n"), "{text}");
        assert!(text.ends_with("no longer configured: old\n"), "{text}");
        let v = json!({"data": [{"name": "ops", "disabled": false, "notify": true, "events": [],
            "url": "http://app/", "signing": []}]});
        let text = endpoints(&v);
        assert!(text.contains("(hookrelay's own events)"), "{text}");
        // With none configured, a name still disabled is still said.
        let text = endpoints(&json!({"data": [], "disabled_not_configured": ["old"]}));
        assert!(
            text.starts_with("no endpoints are configured") && text.contains(": old\n"),
            "{text}"
        );
    }

    #[test]
    fn text_from_the_sidecar_cannot_drive_the_terminal() {
        let p = pause(
            &json!({"paused": true, "since": "t", "reason": "\u{1b}[31mRED\u{1b}[0m\u{7}", "host": null}),
        );
        let safe = terminal_safe(&p);
        assert!(
            !safe.contains('\u{1b}') && !safe.contains('\u{7}'),
            "{safe:?}"
        );
        assert!(safe.contains("\\u{1b}[31mRED"), "{safe}");
        assert_eq!(terminal_safe("a\tb\nc"), "a\tb\nc");
        // A reason cannot forge a line of output, nor reverse the rest of its line.
        let p = pause(
            &json!({"paused": true, "since": "t", "reason": "x\nhost api.example.com:443 running\u{202e}", "host": "h:80"}),
        );
        let safe = terminal_safe(&p);
        assert_eq!(safe.lines().count(), 1, "{safe:?}");
        assert!(safe.contains("x\\nhost api"), "{safe}");
        assert!(
            safe.contains("\\u{202e}") && !safe.contains('\u{202e}'),
            "{safe}"
        );
        let s = status(
            &json!({"paused": true}),
            &json!({"data": []}),
            &json!({"hosts": []}),
            Some(&json!({"since": "t", "reason": "a\r\nb"})),
        );
        assert!(s.contains("delivery: PAUSED since t: a\\r\\nb\n"), "{s}");
        assert_eq!(cell(&json!("a\nb")), "a\\nb");
    }

    #[test]
    fn summaries_show_the_essentials() {
        let b = json!({"id": "bat_1", "status": "dry_run", "dry_run": true, "created_at": "t",
            "requested": 2, "reason": "oops", "created": [{"source": "dlv_a", "delivery": null}],
            "skipped": [{"id": "dlv_b", "reason": "not_found"}]});
        let text = batch(&b);
        assert!(text.contains("would create 1, skipped 1"), "{text}");
        assert!(
            text.contains("dlv_b") && text.contains("not_found"),
            "{text}"
        );
        let p = pause(&json!({"paused": true, "since": "t", "reason": null, "host": "h:1"}));
        assert_eq!(p, "host h:1 paused since t (no reason given)\n");
        let page = json!({"data": [{"id": "dlv_a", "status": "failed"}], "next_cursor": "C"});
        let text = deliveries(&page);
        assert!(
            text.contains("dlv_a  failed") && text.ends_with("more: --cursor C\n"),
            "{text}"
        );
        let page = json!({"data": [{"id": "bat_a", "status": "completed"}], "next_cursor": "D"});
        let text = batches(&page);
        assert!(
            text.contains("bat_a  completed") && text.ends_with("more: --cursor D\n"),
            "{text}"
        );
    }

    #[test]
    fn status_names_what_holds_each_host() {
        let stats = serde_json::json!({"paused": false, "counts": {"pending": 3}});
        let hosts = serde_json::json!({"data": [
            {"host": "a:443", "pending": 1, "in_progress": 0, "paused": false, "circuit": "closed"},
            {"host": "b:443", "pending": 1, "in_progress": 0, "paused": false, "circuit": "open",
             "next_probe_at": "2026-11-29T05:00:00.000Z", "rate_limit": "20/s"},
            {"host": "c:443", "pending": 1, "in_progress": 0, "paused": true, "circuit": "closed",
             "retry_after_until": "2026-11-29T05:01:00.000Z", "held_for_disabled_endpoint": 1},
            {"host": "d:443", "pending": 0, "in_progress": 0, "paused": true, "circuit": "closed",
             "pause_reason": "receiver migrating\nto the new cluster, back at noon (ops ticket 42)"},
        ]});
        let health = serde_json::json!({"hosts": [], "disabled_endpoints": ["gone"]});
        let text = status(&stats, &hosts, &health, None);
        assert!(
            text.contains("disabled endpoints (410 Gone; `hookrelay endpoints enable NAME`): gone"),
            "{text}"
        );
        let line = |host: &str| {
            text.lines()
                .find(|l| l.starts_with(host))
                .unwrap()
                .to_string()
        };
        assert!(line("a:443").contains("running"), "{text}");
        assert!(
            line("b:443").contains("circuit open (probe at 2026-11-29T05:00:00.000Z)"),
            "{text}"
        );
        assert!(line("b:443").contains("20/s"), "{text}");
        let c = line("c:443");
        assert!(
            c.contains(
                "paused; Retry-After until 2026-11-29T05:01:00.000Z; 1 held for a disabled endpoint"
            ),
            "{c}"
        );
        assert!(
            line("d:443").contains("paused: receiver migrating\\nto the new cluster, b…"),
            "{text}"
        );

        // Under the global pause: since when and why, and every host held by it.
        let stats = serde_json::json!({"paused": true, "counts": {}});
        let pause = serde_json::json!({"paused": true, "since": "2026-11-29T06:00:00.000Z",
            "reason": "receiver migration"});
        let text = status(&stats, &hosts, &health, Some(&pause));
        assert!(
            text.starts_with(
                "delivery: PAUSED since 2026-11-29T06:00:00.000Z: receiver migration\n"
            ),
            "{text}"
        );
        let line = |host: &str| text.lines().find(|l| l.starts_with(host)).unwrap();
        assert!(line("a:443").contains("held by the global pause"), "{text}");
        assert!(!line("c:443").contains("global"), "{text}");
    }
}
