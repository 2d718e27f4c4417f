//! Delivery listings over the store's indexes, for the admin API and replay selection.
//!
//! A listing walks one index newest first: `by_status` when a status is given, otherwise the
//! `deliveries` table itself (ids are time-ordered, so `since`/`until` become an id range). The
//! other filters are checked row by row, and a page stops after `max_scan` examined rows with a
//! cursor to continue, so no request scans without bound. A replay selection has a bound too,
//! shared by the states it reads, and says when it stopped short of the end. It never writes.

use redb::ReadableDatabase;

use super::{BY_STATUS, DELIVERIES, Store, StoreError, decode};
use crate::model::{Classification, DeliveryRecord, Id, Status};

/// What a listing keeps. Times are milliseconds since the epoch: `since` inclusive, `until`
/// exclusive, both compared with the delivery's creation time (its id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryFilter {
    /// A stored state (`in_progress` is never stored; the admin maps it to pending + in flight).
    pub status: Option<Status>,
    /// The target URL starts with this (an exact URL is its own prefix).
    pub target_prefix: Option<String>,
    pub endpoint: Option<String>,
    /// The classification of the last attempt.
    pub classification: Option<Classification>,
    pub since: Option<u64>,
    pub until: Option<u64>,
}

impl DeliveryFilter {
    /// Whether a record passes the filters that no index answers (a scan builds its matcher
    /// once instead).
    #[cfg(test)]
    fn matches(&self, r: &DeliveryRecord) -> bool {
        self.matcher().matches(r)
    }

    /// The filter ready to test many records: the target prefix is also redacted, and read as
    /// a URL, once here.
    fn matcher(&self) -> Matcher<'_> {
        let parsed = self.target_prefix.as_deref().and_then(|p| {
            let u = url::Url::parse(p).ok()?;
            let mut shown = crate::redact::target(u.as_str()).into_owned();
            // A prefix that stops at the host (`HTTP://127.0.0.1`) parses with a `/` the stored
            // targets of its ports do not have there: it matches them as the raw one would.
            let bare = u.path() == "/" && u.query().is_none() && u.fragment().is_none();
            if bare && !p.ends_with(['/', '\\']) && shown.ends_with('/') {
                shown.pop();
            }
            (matches!(u.scheme(), "http" | "https") && shown != p).then_some(shown)
        });
        Matcher {
            filter: self,
            redacted_prefix: self.target_prefix.as_deref().map(crate::redact::target),
            parsed_prefix: parsed,
        }
    }

    /// The inclusive id range the time bounds and the cursor allow; `None` when it is empty.
    fn id_range(&self, before: Option<Id>) -> Option<(u128, u128)> {
        let lo = self.since.map_or(0, |ms| Id::from_parts(ms, 0).0);
        let mut hi = u128::MAX;
        if let Some(until) = self.until {
            hi = hi.min(Id::from_parts(until, 0).0.checked_sub(1)?);
        }
        if let Some(b) = before {
            hi = hi.min(b.0.checked_sub(1)?);
        }
        (lo <= hi).then_some((lo, hi))
    }
}

/// A [`DeliveryFilter`] with its target prefix also in redacted form.
struct Matcher<'f> {
    filter: &'f DeliveryFilter,
    redacted_prefix: Option<std::borrow::Cow<'f, str>>,
    /// The prefix as parsed, as targets are stored (`HTTP://H:80/x/../y` as `http://h/y`),
    /// redacted; None when that changes nothing.
    parsed_prefix: Option<String>,
}

impl Matcher<'_> {
    fn matches(&self, r: &DeliveryRecord) -> bool {
        let f = self.filter;
        f.status.is_none_or(|s| r.status == s)
            // Against the target as it is shown (credentials and path tokens as `***`), so a
            // listing cannot be used to guess them: a target copied from a listing matches
            // itself, and so does the real URL, redacted the same way (whatever it says where
            // the shown one has `***`, it becomes `***` too).
            && f.target_prefix.as_deref().is_none_or(|p| {
                let shown = crate::redact::target(&r.target);
                shown.starts_with(p)
                    || self
                        .redacted_prefix
                        .as_deref()
                        .is_some_and(|q| shown.starts_with(q))
                    || self
                        .parsed_prefix
                        .as_deref()
                        .is_some_and(|q| shown.starts_with(q))
            })
            && f
                .endpoint
                .as_deref()
                .is_none_or(|e| r.endpoint.as_deref() == Some(e))
            && f
                .classification
                .is_none_or(|c| r.last_classification == Some(c))
    }
}

/// One page of a listing, newest first.
#[derive(Debug, Default)]
pub struct Page {
    pub rows: Vec<(Id, DeliveryRecord)>,
    /// Where the next page starts (exclusive), when more rows may follow.
    pub next_cursor: Option<Id>,
    /// Rows read to make the page, matching or not (at most `max_scan`).
    pub examined: usize,
}

/// What a replay-by-filter selection found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplaySelection {
    /// Every match, oldest first.
    Ids(Vec<Id>),
    /// More than `max` rows match.
    TooMany,
    /// `max_scan` rows were examined and rows in the filter's range were left unread, so the
    /// matches are not known.
    TooBroad { examined: usize },
}

impl Store {
    /// Deliveries matching `filter` and `keep`, newest first, strictly older than `before`.
    /// Stops at `limit` rows or after examining `max_scan` rows, whichever comes first; in both
    /// cases `next_cursor` says where to continue.
    pub fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        before: Option<Id>,
        limit: usize,
        max_scan: usize,
        keep: impl Fn(Id) -> bool,
    ) -> Result<Page, StoreError> {
        let mut page = Page::default();
        let Some((lo, hi)) = filter.id_range(before) else {
            return Ok(page);
        };
        let txn = self.db.begin_read()?;
        let deliveries = txn.open_table(DELIVERIES)?;
        let matcher = filter.matcher();
        // Returns false when the page is complete.
        let consider = |id: u128, record: DeliveryRecord, page: &mut Page| -> bool {
            page.examined += 1;
            if matcher.matches(&record) && keep(Id(id)) {
                page.rows.push((Id(id), record));
            }
            if page.rows.len() >= limit || page.examined >= max_scan {
                page.next_cursor = Some(Id(id));
                return false;
            }
            true
        };
        let mut more = false;
        if let Some(status) = filter.status {
            let index = txn.open_table(BY_STATUS)?;
            let code = status.code();
            let mut rows = index.range((code, lo)..=(code, hi))?.rev();
            for row in rows.by_ref() {
                let id = row?.0.value().1;
                let Some(bytes) = deliveries.get(id)? else {
                    continue;
                };
                let record = decode("deliveries", bytes.value())?;
                if !consider(id, record, &mut page) {
                    more = rows.next().is_some();
                    break;
                }
            }
        } else {
            let mut rows = deliveries.range(lo..=hi)?.rev();
            for row in rows.by_ref() {
                let (k, v) = row?;
                let record = decode("deliveries", v.value())?;
                if !consider(k.value(), record, &mut page) {
                    more = rows.next().is_some();
                    break;
                }
            }
        }
        if !more {
            page.next_cursor = None;
        }
        Ok(page)
    }

    /// The ids a replay-by-filter selects: every match in a replayable state (the given status,
    /// or `failed` and `cancelled` when none is given), at most `max`, reading at most
    /// `max_scan` rows across those states.
    pub fn select_for_replay(
        &self,
        filter: &DeliveryFilter,
        max: usize,
        max_scan: usize,
    ) -> Result<ReplaySelection, StoreError> {
        let statuses = match filter.status {
            Some(s) => vec![s],
            None => vec![Status::Failed, Status::Cancelled],
        };
        let mut ids = Vec::new();
        let mut examined = 0;
        for status in statuses {
            let f = DeliveryFilter {
                status: Some(status),
                ..filter.clone()
            };
            let left = max_scan.saturating_sub(examined);
            if left == 0 {
                // The bound is spent: any row of this state in range means the scan did not
                // finish. Only the index is looked at; no record is read.
                if self.any_in_range(&f)? {
                    return Ok(ReplaySelection::TooBroad { examined });
                }
                continue;
            }
            let page = self.list_deliveries(&f, None, max + 1, left, |_| true)?;
            examined += page.examined;
            ids.extend(page.rows.into_iter().map(|(id, _)| id));
            if ids.len() > max {
                return Ok(ReplaySelection::TooMany);
            }
            // Fewer than `max + 1` matches and a cursor: the scan stopped at `left` rows.
            if page.next_cursor.is_some() {
                return Ok(ReplaySelection::TooBroad { examined });
            }
        }
        // Oldest first, so the new deliveries keep the order of their sources.
        ids.sort();
        Ok(ReplaySelection::Ids(ids))
    }

    /// Whether the by-state index holds any row for the filter's status and time range.
    fn any_in_range(&self, filter: &DeliveryFilter) -> Result<bool, StoreError> {
        let (Some(status), Some((lo, hi))) = (filter.status, filter.id_range(None)) else {
            return Ok(false);
        };
        let txn = self.db.begin_read()?;
        let index = txn.open_table(BY_STATUS)?;
        let code = status.code();
        Ok(index
            .range((code, lo)..=(code, hi))?
            .next()
            .transpose()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer on a fresh store, with `targets` ingested as pending deliveries, oldest first.
    async fn ingested(
        targets: &[String],
    ) -> (
        tempfile::TempDir,
        Store,
        crate::store::writer::WriterHandle,
        Vec<Id>,
    ) {
        use crate::metrics::Metrics;
        use crate::model::Payload;
        use crate::store::encode;
        use crate::store::writer::{self, IngestResult, IngestWrite, NewDelivery};

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // The scheduler's end is dropped: these tests read the store, not the announcements.
        let (enqueued_tx, _) = tokio::sync::mpsc::unbounded_channel();
        // The writer thread ends when its last handle is dropped.
        let (handle, _) = writer::spawn(&store, Metrics::new(), enqueued_tx).unwrap();
        let deliveries = targets
            .iter()
            .map(|t| NewDelivery {
                record: encode(&record(t, Status::Pending)),
                payload: encode(&Payload {
                    headers: vec![],
                    body: vec![],
                }),
                next_at: 0,
                host: "h.example:80".into(),
            })
            .collect();
        let ingested = IngestWrite {
            idem: None,
            event_id: None,
            deliveries,
            received: std::time::Instant::now(),
        };
        let IngestResult::Created { ids, .. } = handle.ingest(ingested).await.unwrap() else {
            panic!("not created");
        };
        (dir, store, handle, ids)
    }

    fn record(target: &str, status: Status) -> DeliveryRecord {
        DeliveryRecord {
            status,
            method: "POST".into(),
            target: target.into(),
            endpoint: Some("orders".into()),
            event_id: None,
            idempotency_key: None,
            created_at: 0,
            updated_at: 0,
            next_attempt_at: None,
            attempt_count: 1,
            last_classification: Some(Classification::Http4xxPermanent),
            last_status_code: Some(400),
            finished_at: None,
            body_len: 0,
            replay_of: None,
            batch_id: None,
        }
    }

    #[test]
    fn filters_match_by_field() {
        let r = record("http://a.example/x/1", Status::Failed);
        let cases: &[(DeliveryFilter, bool)] = &[
            (DeliveryFilter::default(), true),
            (
                DeliveryFilter {
                    status: Some(Status::Failed),
                    ..Default::default()
                },
                true,
            ),
            (
                DeliveryFilter {
                    status: Some(Status::Pending),
                    ..Default::default()
                },
                false,
            ),
            (
                DeliveryFilter {
                    target_prefix: Some("http://a.example/x".into()),
                    ..Default::default()
                },
                true,
            ),
            (
                DeliveryFilter {
                    target_prefix: Some("http://b.example".into()),
                    ..Default::default()
                },
                false,
            ),
            (
                DeliveryFilter {
                    endpoint: Some("billing".into()),
                    ..Default::default()
                },
                false,
            ),
            (
                DeliveryFilter {
                    classification: Some(Classification::Http4xxPermanent),
                    ..Default::default()
                },
                true,
            ),
            (
                DeliveryFilter {
                    classification: Some(Classification::Timeout),
                    ..Default::default()
                },
                false,
            ),
        ];
        for (f, want) in cases {
            assert_eq!(f.matches(&r), *want, "{f:?}");
        }
    }

    /// A target whose token is shown as `***` is found by the real URL, by the URL as shown,
    /// and by a prefix of either; a wrong token matches as well as the right one (the listing
    /// is no oracle for it), and another host or path does not.
    #[test]
    fn a_redacted_target_is_found_by_its_real_and_its_shown_url() {
        let slack = record(
            "https://hooks.slack.com/services/T0/B0/S3CR3T?x=1",
            Status::Failed,
        );
        let token = record("http://127.0.0.1:9/api/token/refresh", Status::Failed);
        let by = |p: &str| DeliveryFilter {
            target_prefix: Some(p.into()),
            ..Default::default()
        };
        for (r, p, want) in [
            (
                &slack,
                "https://hooks.slack.com/services/T0/B0/S3CR3T?x=1",
                true,
            ),
            (
                &slack,
                "https://hooks.slack.com/services/T0/B0/***?x=1",
                true,
            ),
            (
                &slack,
                "https://hooks.slack.com/services/T0/B0/WRONG?x=1",
                true,
            ),
            (&slack, "https://hooks.slack.com/services/T0/", true),
            (&slack, "https://hooks.slack.com/services/T1/", false),
            (
                &slack,
                "https://hooks.slack.com/services/T0/B1/S3CR3T",
                false,
            ),
            (&token, "http://127.0.0.1:9/api/token/refresh", true),
            (&token, "http://127.0.0.1:9/api/token/", true),
            (&token, "http://127.0.0.1:9/api/other/refresh", false),
        ] {
            assert_eq!(by(p).matches(r), want, "{p} for {}", r.target);
        }
    }

    #[test]
    fn time_bounds_and_cursor_become_an_id_range() {
        let f = DeliveryFilter {
            since: Some(10),
            until: Some(20),
            ..Default::default()
        };
        let (lo, hi) = f.id_range(None).unwrap();
        assert_eq!(lo, Id::from_parts(10, 0).0);
        assert_eq!(hi, Id::from_parts(20, 0).0 - 1);
        let (_, hi) = f.id_range(Some(Id::from_parts(15, 7))).unwrap();
        assert_eq!(hi, Id::from_parts(15, 7).0 - 1);
        assert_eq!(f.id_range(Some(Id::from_parts(5, 0))), None);
        assert_eq!(DeliveryFilter::default().id_range(Some(Id(0))), None);
    }

    #[tokio::test]
    async fn a_replay_selection_stops_at_max_scan_rows_across_states_and_says_so() {
        use crate::model::Attempt;
        use crate::store::writer::{AttemptWrite, CancelResult, NextState};

        // Ten deliveries, oldest first; the first and the eighth go to /rare.
        let targets: Vec<String> = (0..10)
            .map(|i| {
                let path = if i == 0 || i == 7 { "rare" } else { "common" };
                format!("http://h.example/{path}/{i}")
            })
            .collect();
        let (_dir, store, handle, ids) = ingested(&targets).await;
        // 0..6 fail.
        for &id in &ids[..6] {
            let failed = AttemptWrite {
                id,
                host: "h.example:80".into(),
                attempt: Attempt {
                    number: 1,
                    started_at: 1,
                    duration_ms: 1,
                    status_code: Some(400),
                    classification: Classification::Http4xxPermanent,
                    error: None,
                    response_snippet: None,
                },
                next: NextState::Failed,
                notify: None,
            };
            handle.attempt(failed).await.unwrap();
        }
        let rare = |status: Option<Status>| DeliveryFilter {
            status,
            target_prefix: Some("http://h.example/rare/".into()),
            ..Default::default()
        };
        let select = |f: &DeliveryFilter, max: usize, max_scan: usize| {
            store.select_for_replay(f, max, max_scan).unwrap()
        };
        // The bound spent exactly on the failed rows, and no cancelled row in range: complete.
        assert_eq!(
            select(&rare(None), 10, 6),
            ReplaySelection::Ids(vec![ids[0]])
        );

        // 6..10 are cancelled.
        for &id in &ids[6..] {
            let cancelled = handle.cancel(id).await.unwrap();
            assert!(matches!(cancelled, CancelResult::Cancelled { .. }));
        }
        let cases: Vec<(DeliveryFilter, usize, usize, ReplaySelection)> = vec![
            // 6 failed + 4 cancelled rows read, none left: every match, oldest first.
            (
                rare(None),
                10,
                10,
                ReplaySelection::Ids(vec![ids[0], ids[7]]),
            ),
            (
                rare(None),
                10,
                1000,
                ReplaySelection::Ids(vec![ids[0], ids[7]]),
            ),
            // The bound is shared: 6 failed, then 3 of the 4 cancelled rows.
            (rare(None), 10, 9, ReplaySelection::TooBroad { examined: 9 }),
            // Spent on the failed rows with cancelled rows left unread.
            (rare(None), 10, 6, ReplaySelection::TooBroad { examined: 6 }),
            (
                rare(Some(Status::Failed)),
                10,
                6,
                ReplaySelection::Ids(vec![ids[0]]),
            ),
            (
                rare(Some(Status::Failed)),
                10,
                5,
                ReplaySelection::TooBroad { examined: 5 },
            ),
            // Too many matches is known as soon as there are `max + 1`, bound or not.
            (DeliveryFilter::default(), 3, 5, ReplaySelection::TooMany),
            (
                DeliveryFilter::default(),
                10,
                10,
                ReplaySelection::Ids(ids.clone()),
            ),
        ];
        for (filter, max, max_scan, want) in cases {
            assert_eq!(
                select(&filter, max, max_scan),
                want,
                "{filter:?} max {max} max_scan {max_scan}"
            );
        }
    }

    #[tokio::test]
    async fn a_page_stops_after_max_scan_rows_with_a_cursor_and_counts_follow_the_writer() {
        let targets: Vec<String> = (0..25).map(|i| format!("http://h.example/{i}")).collect();
        let (_dir, store, handle, _) = ingested(&targets).await;
        assert_eq!(store.counts().unwrap().get(Status::Pending), 25);

        // A filter that matches nothing still answers after examining 10 rows at most.
        let none = DeliveryFilter {
            target_prefix: Some("http://other".into()),
            ..Default::default()
        };
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = store
                .list_deliveries(&none, cursor, 5, 10, |_| true)
                .unwrap();
            assert!(page.rows.is_empty());
            pages += 1;
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(pages, 3);

        // The last page of an exact fit has no cursor.
        let all = store
            .list_deliveries(&DeliveryFilter::default(), None, 25, 1000, |_| true)
            .unwrap();
        assert_eq!((all.rows.len(), all.next_cursor), (25, None));
        let first = all.rows[24].0;
        let cancelled = handle.cancel(first).await.unwrap();
        assert!(matches!(
            cancelled,
            crate::store::writer::CancelResult::Cancelled { .. }
        ));
        let counts = store.counts().unwrap();
        assert_eq!(
            (counts.get(Status::Pending), counts.get(Status::Cancelled)),
            (24, 1)
        );
        assert_eq!(
            store
                .select_for_replay(&DeliveryFilter::default(), 10, 1000)
                .unwrap(),
            ReplaySelection::Ids(vec![first])
        );
    }
}
