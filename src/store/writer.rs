//! The single writer: one OS thread owns every redb write transaction.
//!
//! It blocks for the first operation, takes every other operation already waiting (group
//! commit), applies them in order inside one `Durability::Immediate` transaction, commits, and
//! only then answers each caller. An ingest is acked only after that answer, so a 2xx always
//! means "on disk". If the commit fails, every operation of the batch gets the error and nothing
//! of it is visible; earlier commits are untouched.
//!
//! It never does network I/O and never waits on anything but its channel and the disk.
//! Operator changes (cancel, replay, pause) live in `writer/operator.rs`.

pub mod operator;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::clock;
use crate::metrics::Metrics;
use crate::model::{Attempt, BatchRecord, DeliveryRecord, Id, IdGen, PauseRecord, Status};
use operator::CountDelta;
pub use operator::{CancelResult, ReplayWrite};

/// Most operations folded into one transaction; bounds the latency of a batch.
const MAX_BATCH: usize = 4096;
/// Most expired rows removed per prune operation, so pruning never stalls ingest.
const PRUNE_LIMIT: usize = 2000;

/// An idempotency claim made by one ingest request.
#[derive(Debug, Clone)]
pub struct IdemClaim {
    /// sha256 of the scope and the key.
    pub key: [u8; 32],
    /// sha256 of what must match for a repeat to count as the same request.
    pub body_hash: [u8; 32],
    pub expires_at: u64,
}

/// One delivery to create, encoded by the ingest thread so the writer only inserts bytes.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub record: Vec<u8>,
    pub payload: Vec<u8>,
    pub next_at: u64,
    pub host: String,
}

#[derive(Debug)]
pub struct IngestWrite {
    pub idem: Option<IdemClaim>,
    pub event_id: Option<Id>,
    pub deliveries: Vec<NewDelivery>,
    /// When the request arrived, for the ack-latency histogram.
    pub received: Instant,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IngestResult {
    Created { event_id: Option<Id>, ids: Vec<Id> },
    Duplicate { event_id: Option<Id>, ids: Vec<Id> },
    KeyReused,
}

/// What the delivery becomes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NextState {
    Retry { next_at: u64 },
    Delivered,
    Failed,
}

#[derive(Debug)]
pub struct AttemptWrite {
    pub id: Id,
    pub attempt: Attempt,
    pub next: NextState,
}

/// What the scheduler must learn from a commit: new pending work.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub next_at: u64,
    pub id: Id,
    pub host: String,
}

#[derive(Debug, Default, PartialEq)]
pub struct PruneResult {
    pub deliveries: usize,
    pub idempotency: usize,
    /// When the next row becomes prunable, if any is left.
    pub next_due: Option<u64>,
}

pub enum WriteOp {
    Ingest(
        IngestWrite,
        oneshot::Sender<Result<IngestResult, StoreError>>,
    ),
    Attempt(AttemptWrite, oneshot::Sender<Result<(), StoreError>>),
    Prune {
        now: u64,
        retention_ms: u64,
        reply: oneshot::Sender<Result<PruneResult, StoreError>>,
    },
    Cancel(Id, oneshot::Sender<Result<CancelResult, StoreError>>),
    Replay(
        ReplayWrite,
        oneshot::Sender<Result<(Id, BatchRecord), StoreError>>,
    ),
    /// Sets or clears the global pause, or one host's.
    Pause {
        host: Option<String>,
        pause: Option<PauseRecord>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The sending half, held by ingest, workers and admin. Dropping the last one stops the writer.
#[derive(Clone)]
pub struct WriterHandle {
    ops_tx: mpsc::Sender<WriteOp>,
    healthy: Arc<AtomicBool>,
}

impl WriterHandle {
    pub async fn ingest(&self, w: IngestWrite) -> Result<IngestResult, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Ingest(w, tx)).await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn attempt(&self, w: AttemptWrite) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Attempt(w, tx)).await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn prune(&self, now: u64, retention_ms: u64) -> Result<PruneResult, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Prune {
            now,
            retention_ms,
            reply: tx,
        })
        .await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn cancel(&self, id: Id) -> Result<CancelResult, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Cancel(id, tx)).await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn replay(&self, w: ReplayWrite) -> Result<(Id, BatchRecord), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Replay(w, tx)).await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Stores the global pause (`host` None) or a host's; `pause` None clears it.
    pub async fn set_pause(
        &self,
        host: Option<String>,
        pause: Option<PauseRecord>,
    ) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Pause {
            host,
            pause,
            reply: tx,
        })
        .await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    async fn send(&self, op: WriteOp) -> Result<(), StoreError> {
        self.ops_tx
            .send(op)
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// False after a failed commit (true again after the next successful one), and false for
    /// good once the writer thread has stopped.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.ops_tx.is_closed()
    }
}

/// Starts the writer thread. New pending work is announced on `enqueued_tx` after each commit.
pub fn spawn(
    store: &Store,
    metrics: Metrics,
    enqueued_tx: mpsc::UnboundedSender<Vec<Enqueued>>,
) -> std::io::Result<(WriterHandle, JoinHandle<()>)> {
    let (ops_tx, ops_rx) = mpsc::channel(MAX_BATCH * 4);
    let healthy = Arc::new(AtomicBool::new(true));
    let writer = Writer {
        db: store.db(),
        ops_rx,
        enqueued_tx,
        metrics,
        ids: IdGen::default(),
        healthy: healthy.clone(),
    };
    let join = std::thread::Builder::new()
        .name("hookrelay-writer".into())
        .spawn(move || writer.run())?;
    Ok((WriterHandle { ops_tx, healthy }, join))
}

struct Writer {
    db: Arc<Database>,
    ops_rx: mpsc::Receiver<WriteOp>,
    enqueued_tx: mpsc::UnboundedSender<Vec<Enqueued>>,
    metrics: Metrics,
    /// Only the writer assigns delivery ids, so they are strictly increasing on disk.
    ids: IdGen,
    healthy: Arc<AtomicBool>,
}

/// An operation's answer, held until the commit that makes it true.
enum Reply {
    Ingest(
        oneshot::Sender<Result<IngestResult, StoreError>>,
        Result<IngestResult, StoreError>,
        Instant,
    ),
    Attempt(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
    Prune(
        oneshot::Sender<Result<PruneResult, StoreError>>,
        Result<PruneResult, StoreError>,
    ),
    Cancel(
        oneshot::Sender<Result<CancelResult, StoreError>>,
        Result<CancelResult, StoreError>,
    ),
    Replay(
        oneshot::Sender<Result<(Id, BatchRecord), StoreError>>,
        Result<(Id, BatchRecord), StoreError>,
    ),
    Pause(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
}

impl Reply {
    fn fail(self, e: &StoreError) {
        let err = || StoreError::CommitFailed(e.to_string());
        match self {
            Reply::Ingest(tx, _, _) => drop(tx.send(Err(err()))),
            Reply::Attempt(tx, _) => drop(tx.send(Err(err()))),
            Reply::Prune(tx, _) => drop(tx.send(Err(err()))),
            Reply::Cancel(tx, _) => drop(tx.send(Err(err()))),
            Reply::Replay(tx, _) => drop(tx.send(Err(err()))),
            Reply::Pause(tx, _) => drop(tx.send(Err(err()))),
        }
    }
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = self.ops_rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.ops_rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
        }
        tracing::debug!("store writer: all senders gone, stopping");
    }

    fn commit_batch(&mut self, batch: &mut Vec<WriteOp>) {
        let started = Instant::now();
        let size = batch.len();
        let mut replies = Vec::with_capacity(size);
        let mut enqueued = Vec::new();
        let result = (|| -> Result<(), StoreError> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            let mut delta = CountDelta::default();
            for op in batch.drain(..) {
                replies.push(self.apply(&txn, op, &mut enqueued, &mut delta));
            }
            delta.write(&txn)?;
            txn.commit()?;
            Ok(())
        })();
        // Ops not yet drained (begin_write failed) still need an answer.
        for op in batch.drain(..) {
            replies.push(match op {
                WriteOp::Ingest(_, tx) => {
                    Reply::Ingest(tx, Err(StoreError::WriterGone), Instant::now())
                }
                WriteOp::Attempt(_, tx) => Reply::Attempt(tx, Err(StoreError::WriterGone)),
                WriteOp::Prune { reply, .. } => Reply::Prune(reply, Err(StoreError::WriterGone)),
                WriteOp::Cancel(_, tx) => Reply::Cancel(tx, Err(StoreError::WriterGone)),
                WriteOp::Replay(_, tx) => Reply::Replay(tx, Err(StoreError::WriterGone)),
                WriteOp::Pause { reply, .. } => Reply::Pause(reply, Err(StoreError::WriterGone)),
            });
        }
        match result {
            Ok(()) => {
                self.healthy.store(true, Ordering::Relaxed);
                self.metrics
                    .commit_duration
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.commit_batch_size.observe(size as f64);
                if !enqueued.is_empty() {
                    // The scheduler may be gone during shutdown; the work is on disk either way.
                    let _ = self.enqueued_tx.send(enqueued);
                }
                for reply in replies {
                    match reply {
                        Reply::Ingest(tx, r, received) => {
                            self.metrics
                                .ack_duration
                                .observe(received.elapsed().as_secs_f64());
                            let _ = tx.send(r);
                        }
                        Reply::Attempt(tx, r) => drop(tx.send(r)),
                        Reply::Prune(tx, r) => drop(tx.send(r)),
                        Reply::Cancel(tx, r) => drop(tx.send(r)),
                        Reply::Replay(tx, r) => drop(tx.send(r)),
                        Reply::Pause(tx, r) => drop(tx.send(r)),
                    }
                }
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, batch = size, "store commit failed; the batch is refused");
                for reply in replies {
                    reply.fail(&e);
                }
            }
        }
    }

    fn apply(
        &mut self,
        txn: &WriteTransaction,
        op: WriteOp,
        enqueued: &mut Vec<Enqueued>,
        delta: &mut CountDelta,
    ) -> Reply {
        match op {
            WriteOp::Ingest(w, tx) => {
                let received = w.received;
                Reply::Ingest(tx, self.ingest(txn, w, enqueued, delta), received)
            }
            WriteOp::Attempt(w, tx) => Reply::Attempt(tx, record_attempt(txn, w, delta)),
            WriteOp::Prune {
                now,
                retention_ms,
                reply,
            } => Reply::Prune(reply, prune(txn, now, retention_ms, delta)),
            WriteOp::Cancel(id, tx) => Reply::Cancel(tx, operator::cancel(txn, id, delta)),
            WriteOp::Replay(w, tx) => {
                Reply::Replay(tx, operator::replay(txn, &mut self.ids, w, enqueued, delta))
            }
            WriteOp::Pause { host, pause, reply } => Reply::Pause(
                reply,
                operator::set_pause(txn, host.as_deref(), pause.as_ref()),
            ),
        }
    }

    fn ingest(
        &mut self,
        txn: &WriteTransaction,
        w: IngestWrite,
        enqueued: &mut Vec<Enqueued>,
        delta: &mut CountDelta,
    ) -> Result<IngestResult, StoreError> {
        let now = clock::now_ms();
        if let Some(claim) = &w.idem {
            let idem = txn.open_table(IDEMPOTENCY)?;
            let existing = idem
                .get(&claim.key)?
                .map(|v| decode::<IdemRecord>("idempotency", v.value()))
                .transpose()?;
            if let Some(found) = existing {
                if found.expires_at > now {
                    return Ok(if found.body_hash == claim.body_hash {
                        IngestResult::Duplicate {
                            event_id: found.event_id,
                            ids: found.deliveries,
                        }
                    } else {
                        IngestResult::KeyReused
                    });
                }
                // Expired but not yet pruned: the key is free again.
                let mut expiry = txn.open_table(IDEM_EXPIRY)?;
                expiry.remove((found.expires_at, &claim.key))?;
            }
        }
        let mut deliveries = txn.open_table(DELIVERIES)?;
        let mut payloads = txn.open_table(PAYLOADS)?;
        let mut due = txn.open_table(DUE)?;
        let mut by_status = txn.open_table(BY_STATUS)?;
        let mut ids = Vec::with_capacity(w.deliveries.len());
        for d in &w.deliveries {
            let id = self.ids.next(now);
            deliveries.insert(id.0, d.record.as_slice())?;
            payloads.insert(id.0, d.payload.as_slice())?;
            due.insert((d.next_at, id.0), d.host.as_str())?;
            by_status.insert((Status::Pending.code(), id.0), ())?;
            delta.add(Status::Pending, 1);
            enqueued.push(Enqueued {
                next_at: d.next_at,
                id,
                host: d.host.clone(),
            });
            ids.push(id);
        }
        if let Some(claim) = &w.idem {
            let record = IdemRecord {
                body_hash: claim.body_hash,
                expires_at: claim.expires_at,
                event_id: w.event_id,
                deliveries: ids.clone(),
            };
            txn.open_table(IDEMPOTENCY)?
                .insert(&claim.key, encode(&record).as_slice())?;
            txn.open_table(IDEM_EXPIRY)?
                .insert((claim.expires_at, &claim.key), ())?;
        }
        Ok(IngestResult::Created {
            event_id: w.event_id,
            ids,
        })
    }
}

fn record_attempt(
    txn: &WriteTransaction,
    w: AttemptWrite,
    delta: &mut CountDelta,
) -> Result<(), StoreError> {
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let existing = deliveries
        .get(w.id.0)?
        .map(|v| decode::<DeliveryRecord>("deliveries", v.value()))
        .transpose()?;
    let Some(mut record) = existing else {
        // Pruned or never existed: nothing to attach the attempt to.
        return Ok(());
    };
    txn.open_table(ATTEMPTS)?
        .insert((w.id.0, w.attempt.number), encode(&w.attempt).as_slice())?;
    let now = w.attempt.started_at + w.attempt.duration_ms;
    record.attempt_count = record.attempt_count.max(w.attempt.number);
    record.last_classification = Some(w.attempt.classification);
    record.last_status_code = w.attempt.status_code;
    record.updated_at = now;
    if record.status == Status::Pending {
        let mut due = txn.open_table(DUE)?;
        if let Some(old) = record.next_attempt_at {
            due.remove((old, w.id.0))?;
        }
        match w.next {
            NextState::Retry { next_at } => {
                record.next_attempt_at = Some(next_at);
                due.insert((next_at, w.id.0), record.host().as_str())?;
            }
            NextState::Delivered | NextState::Failed => {
                let status = if w.next == NextState::Delivered {
                    Status::Delivered
                } else {
                    Status::Failed
                };
                record.status = status;
                record.next_attempt_at = None;
                record.finished_at = Some(now);
                let mut by_status = txn.open_table(BY_STATUS)?;
                by_status.remove((Status::Pending.code(), w.id.0))?;
                by_status.insert((status.code(), w.id.0), ())?;
                delta.moved(Status::Pending, status);
                txn.open_table(FINISHED)?.insert((now, w.id.0), ())?;
            }
        }
    }
    deliveries.insert(w.id.0, encode(&record).as_slice())?;
    Ok(())
}

fn prune(
    txn: &WriteTransaction,
    now: u64,
    retention_ms: u64,
    delta: &mut CountDelta,
) -> Result<PruneResult, StoreError> {
    let mut result = PruneResult::default();
    {
        let mut expiry = txn.open_table(IDEM_EXPIRY)?;
        let mut idem = txn.open_table(IDEMPOTENCY)?;
        let mut expired = Vec::new();
        for row in expiry.range((0, &[0u8; 32])..)? {
            let (k, _) = row?;
            let (at, key) = k.value();
            if at > now || expired.len() >= PRUNE_LIMIT {
                result.next_due = Some(at);
                break;
            }
            expired.push((at, *key));
        }
        for (at, key) in &expired {
            expiry.remove((*at, key))?;
            idem.remove(key)?;
        }
        result.idempotency = expired.len();
    }
    let cutoff = now.saturating_sub(retention_ms);
    let mut finished = txn.open_table(FINISHED)?;
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let mut payloads = txn.open_table(PAYLOADS)?;
    let mut attempts = txn.open_table(ATTEMPTS)?;
    let mut by_status = txn.open_table(BY_STATUS)?;
    let mut old = Vec::new();
    for row in finished.range((0, 0)..)? {
        let (k, _) = row?;
        let (at, id) = k.value();
        if at > cutoff || old.len() >= PRUNE_LIMIT {
            let due = at.saturating_add(retention_ms);
            result.next_due = Some(result.next_due.map_or(due, |d| d.min(due)));
            break;
        }
        old.push((at, id));
    }
    for (at, id) in &old {
        finished.remove((*at, *id))?;
        let removed = deliveries.remove(*id)?;
        if let Some(record) = removed {
            let record: DeliveryRecord = decode("deliveries", record.value())?;
            if by_status.remove((record.status.code(), *id))?.is_some() {
                delta.add(record.status, -1);
            }
        }
        payloads.remove(*id)?;
        attempts.retain_in((*id, 0)..=(*id, u32::MAX), |_, _| false)?;
    }
    result.deliveries = old.len();
    Ok(result)
}
