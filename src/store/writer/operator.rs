//! The writer's operator changes: cancel, replay batches, pauses, and the per-state counters
//! every state change keeps in step.
//!
//! These run inside the writer's transaction like every other op. Each one decides everything
//! before it writes anything, so a refused op leaves no partial change behind. They never read
//! the clock except through `clock` and never talk to the scheduler: the writer announces new
//! pending work after the commit, and the admin tells the scheduler about removals.

use std::collections::HashSet;

use redb::{ReadableTable, WriteTransaction};

use super::Enqueued;
use crate::clock;
use crate::model::{
    BatchRecord, DeliveryRecord, Id, IdGen, PauseRecord, ReplayFilter, SkipReason, Status,
};
use crate::store::space::{Room, growth};
use crate::store::{
    BATCHES, BY_STATUS, Counts, DELIVERIES, DUE, FINISHED, HOST_PAUSES, META, META_COUNTS,
    META_PAUSE, PAYLOADS, StoreError, decode, encode,
};

/// How one transaction changes the per-state counts; written once, just before the commit.
#[derive(Debug, Default)]
pub struct CountDelta([i64; 5]);

impl CountDelta {
    pub fn add(&mut self, status: Status, n: i64) {
        self.0[status.code() as usize] += n;
    }

    pub fn moved(&mut self, from: Status, to: Status) {
        self.add(from, -1);
        self.add(to, 1);
    }

    /// Adds the delta to the stored counts (no-op when nothing changed).
    pub fn write(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        if self.0.iter().all(|d| *d == 0) {
            return Ok(());
        }
        let mut meta = txn.open_table(META)?;
        let current = meta
            .get(META_COUNTS)?
            .map(|v| decode::<Counts>("meta", v.value()))
            .transpose()?
            .unwrap_or_default();
        let mut next = current;
        for (n, d) in next.0.iter_mut().zip(self.0) {
            *n = n.saturating_add_signed(d);
        }
        meta.insert(META_COUNTS, encode(&next).as_slice())?;
        Ok(())
    }
}

/// The outcome of a cancel request.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelResult {
    /// Was pending, now cancelled; the scheduler must drop its queue entry.
    Cancelled {
        host: String,
        next_at: u64,
    },
    NotFound,
    /// Not pending: only a pending delivery can be cancelled.
    NotPending(Status),
}

pub fn cancel(
    txn: &WriteTransaction,
    id: Id,
    delta: &mut CountDelta,
) -> Result<CancelResult, StoreError> {
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let existing = deliveries
        .get(id.0)?
        .map(|v| decode::<DeliveryRecord>("deliveries", v.value()))
        .transpose()?;
    let Some(mut record) = existing else {
        return Ok(CancelResult::NotFound);
    };
    if record.status != Status::Pending {
        return Ok(CancelResult::NotPending(record.status));
    }
    let now = clock::now_ms();
    let next_at = record.next_attempt_at.unwrap_or(0);
    let host = record.host();
    if let Some(at) = record.next_attempt_at {
        txn.open_table(DUE)?.remove((at, id.0))?;
    }
    let mut by_status = txn.open_table(BY_STATUS)?;
    by_status.remove((Status::Pending.code(), id.0))?;
    by_status.insert((Status::Cancelled.code(), id.0), ())?;
    txn.open_table(FINISHED)?.insert((now, id.0), ())?;
    delta.moved(Status::Pending, Status::Cancelled);
    record.status = Status::Cancelled;
    record.next_attempt_at = None;
    record.finished_at = Some(now);
    record.updated_at = now;
    deliveries.insert(id.0, encode(&record).as_slice())?;
    Ok(CancelResult::Cancelled { host, next_at })
}

fn missing_payload(id: Id) -> StoreError {
    StoreError::Corrupt {
        table: "payloads",
        reason: format!("no payload for delivery {}", id.0),
    }
}

/// A replay batch as the admin resolved it.
#[derive(Debug, Clone)]
pub struct ReplayWrite {
    /// The ids as requested: the text as given, with the id when the text is a delivery id.
    /// A repeated id is replayed once.
    pub requested: Vec<(String, Option<Id>)>,
    /// Set when the batch was asked for by filter (the ids are then what it matched).
    pub filter: Option<ReplayFilter>,
    pub dry_run: bool,
    pub reason: Option<String>,
}

/// Writes the batch record and, unless it is a dry run, one new pending delivery per
/// replayable source (fresh attempts, same request, `replay_of` and `batch_id` set).
/// With `room` (the disk's room above the reserve left to this batch), a replay whose copies do
/// not fit is refused whole (`NoRoom`) before anything is written.
pub fn replay(
    txn: &WriteTransaction,
    ids: &mut IdGen,
    w: &ReplayWrite,
    enqueued: &mut Vec<Enqueued>,
    delta: &mut CountDelta,
    room: Option<&mut Room>,
) -> Result<(Id, BatchRecord), StoreError> {
    let now = clock::now_ms();
    let batch_id = ids.next(now);
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let mut seen = HashSet::new();
    let mut seen_text = HashSet::new();
    let mut sources = Vec::new();
    let mut skipped = Vec::new();
    for (text, id) in &w.requested {
        let Some(id) = *id else {
            // Named twice, skipped once (as a valid id named twice is replayed once).
            if seen_text.insert(text.as_str()) {
                skipped.push((text.clone(), SkipReason::NotFound));
            }
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let found = deliveries
            .get(id.0)?
            .map(|v| decode::<DeliveryRecord>("deliveries", v.value()))
            .transpose()?;
        match found {
            None => skipped.push((text.clone(), SkipReason::NotFound)),
            Some(r) if !r.status.is_replayable() => {
                skipped.push((text.clone(), SkipReason::NotReplayable))
            }
            Some(r) => sources.push((id, r)),
        }
    }
    let mut created = Vec::with_capacity(sources.len());
    if w.dry_run {
        created.extend(sources.iter().map(|(id, _)| (*id, None)));
    } else {
        let mut payloads = txn.open_table(PAYLOADS)?;
        let mut due = txn.open_table(DUE)?;
        let mut by_status = txn.open_table(BY_STATUS)?;
        // Every payload is checked before anything is written, so a missing one refuses the whole
        // batch with nothing created (a half-created batch would be replayed again, twice
        // delivering what it had created). Each is copied only when its delivery is written,
        // one at a time.
        let mut copies = 0u64;
        for (source, r) in &sources {
            let Some(payload) = payloads.get(source.0)? else {
                return Err(missing_payload(*source));
            };
            copies += payload.value().len() as u64
                + encode(r).len() as u64
                + r.host().len() as u64
                + super::INDEX_ROWS_BYTES;
        }
        if let Some(room) = room
            && !room.take(growth(copies))
        {
            return Err(StoreError::NoRoom {
                needed: growth(copies),
                free: room.free,
            });
        }
        for (source, r) in sources {
            let Some(payload) = payloads.get(source.0)?.map(|v| v.value().to_vec()) else {
                return Err(missing_payload(source));
            };
            let id = ids.next(now);
            let host = r.host();
            let record = DeliveryRecord {
                // The original delivery, also when the source is itself a replay: its id is
                // the signed `webhook-id` of every copy, so a receiver that deduplicates by it
                // sees a replay as the same message (Standard Webhooks keeps the id when a
                // message is sent again). The batch keeps the exact source.
                replay_of: Some(r.replay_of.unwrap_or(source)),
                batch_id: Some(batch_id),
                ..DeliveryRecord::pending(
                    r.method,
                    r.target,
                    r.endpoint,
                    r.event_id,
                    r.idempotency_key,
                    now,
                    r.body_len as usize,
                )
            };
            deliveries.insert(id.0, encode(&record).as_slice())?;
            payloads.insert(id.0, payload.as_slice())?;
            due.insert((now, id.0), host.as_str())?;
            by_status.insert((Status::Pending.code(), id.0), ())?;
            delta.add(Status::Pending, 1);
            enqueued.push(Enqueued {
                next_at: now,
                id,
                host,
            });
            created.push((source, Some(id)));
        }
    }
    let batch = BatchRecord {
        dry_run: w.dry_run,
        reason: w.reason.clone(),
        created_at: now,
        filter: w.filter.clone(),
        // Each delivery (or unknown text) once, however often it was named: so that
        // `created` and `skipped` add up to it.
        requested: (seen.len() + seen_text.len()) as u32,
        created,
        skipped,
    };
    txn.open_table(BATCHES)?
        .insert(batch_id.0, encode(&batch).as_slice())?;
    Ok((batch_id, batch))
}

/// Sets (`Some`) or clears (`None`) the global pause, or one host's when `host` is given.
pub fn set_pause(
    txn: &WriteTransaction,
    host: Option<&str>,
    pause: Option<&PauseRecord>,
) -> Result<(), StoreError> {
    match (host, pause) {
        (None, Some(p)) => {
            txn.open_table(META)?
                .insert(META_PAUSE, encode(p).as_slice())?;
        }
        (None, None) => {
            txn.open_table(META)?.remove(META_PAUSE)?;
        }
        (Some(h), Some(p)) => {
            txn.open_table(HOST_PAUSES)?
                .insert(h, encode(p).as_slice())?;
        }
        (Some(h), None) => {
            txn.open_table(HOST_PAUSES)?.remove(h)?;
        }
    }
    Ok(())
}
