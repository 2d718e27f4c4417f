//! The single writer: one OS thread owns every redb write transaction.
//!
//! It blocks for the first operation, takes every other operation already waiting (group
//! commit), applies them in order inside one `Durability::Immediate` transaction, commits, and
//! only then answers each caller. An ingest is acked only after that answer, so a 2xx always
//! means "on disk". If the commit fails, every operation of the batch gets the error and nothing
//! of it is visible; earlier commits are untouched. An op that meets a redb failure is refused
//! alone and the rest of its batch tried again without it (see `Writer::commit_batch`).
//!
//! It never does network I/O and never waits on anything but its channel and the disk.
//! Operator changes (cancel, replay, pause) live in `writer/operator.rs`.

pub mod operator;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use redb::{Database, Durability, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::idem::{Change, IdemIndex};
use super::space::{Room, free_space, growth, has_room};
use super::*;
use crate::clock;
use crate::metrics::Metrics;
use crate::model::{Attempt, BatchRecord, DeliveryRecord, Id, IdGen, PauseRecord, Status};
use operator::CountDelta;
pub use operator::{CancelResult, ReplayWrite};

/// Most operations folded into one transaction; bounds the latency of a batch.
const MAX_BATCH: usize = 4096;
/// How many ops that meet a redb failure one batch refuses one at a time (trying the rest
/// again each time) before it refuses the whole batch.
const MAX_OPS_REFUSED: usize = 3;
/// Most expired rows removed per prune operation, so pruning never stalls ingest.
pub const PRUNE_LIMIT: usize = 2000;
/// How often the store's size is measured while commits happen (with `store.max_bytes` set).
const MEASURE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Counting live bytes walks every B-tree on the writer thread, so it runs this rarely at most
/// (and only while the file is over `store.max_bytes`); in between the last count stands.
const COUNT_LIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// At most one log line this often for writes refused because they did not fit on the disk.
const NO_ROOM_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// What a delivery's index rows (`due`, `by_status`) or a claim take beyond its record and
/// body, for [`Writer::grew`]'s and the disk room's estimates.
const INDEX_ROWS_BYTES: u64 = 64;

/// What an ingest adds to the store: its records, bodies, hosts and index rows.
fn ingest_bytes(w: &IngestWrite) -> u64 {
    let mut bytes = 0;
    for d in &w.deliveries {
        bytes += (d.record.len() + d.payload.len() + d.host.len()) as u64 + INDEX_ROWS_BYTES;
    }
    if w.idem.is_some() {
        bytes += INDEX_ROWS_BYTES;
    }
    bytes
}

/// An idempotency claim made by one ingest request.
#[derive(Debug, Clone)]
pub struct IdemClaim {
    /// sha256 of the scope and the key.
    pub key: [u8; 32],
    /// sha256 of what must match for a repeat to count as the same request.
    pub body_hash: [u8; 32],
    pub expires_at: u64,
    /// The same claim as the version before schema 3's last change made it (`key`,
    /// `body_hash`), when that differs: the target as sent, the method left out. Looked up
    /// when `key` is not stored, so a request acked before an upgrade and retried after it is
    /// still a duplicate. Never stored.
    pub legacy: Option<([u8; 32], [u8; 32])>,
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

#[derive(Debug, Clone)]
pub struct AttemptWrite {
    pub id: Id,
    /// The delivery's `host:port`, for its next `due` entry (parsed by the caller, so the
    /// writer thread never parses URLs).
    pub host: String,
    pub attempt: Attempt,
    pub next: NextState,
    /// hookrelay's own event to create if this attempt ends the delivery `failed`
    /// (`notify.endpoint`), in the same transaction.
    pub notify: Option<NewDelivery>,
}

/// As the log shows it: `delivered`, `failed`, or `retry at` an RFC 3339 time.
impl std::fmt::Display for NextState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextState::Retry { next_at } => write!(f, "retry at {}", clock::rfc3339(*next_at)),
            NextState::Delivered => f.write_str("delivered"),
            NextState::Failed => f.write_str("failed"),
        }
    }
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
    /// Replay batches (their audit records) older than the retention.
    pub batches: usize,
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
    /// Disables (after a 410) or re-enables a named endpoint; persisted in `meta`. `notify`
    /// is created, in the same transaction, if this disables an endpoint that was enabled.
    EndpointDisabled {
        name: String,
        disabled: bool,
        notify: Option<NewDelivery>,
        reply: oneshot::Sender<Result<(), StoreError>>,
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
    /// Set once redb has refused a write because an earlier one failed: it takes no write
    /// again until the file is reopened, which takes a restart.
    latched: Arc<AtomicBool>,
    /// Set while `healthy` is false only because the disk was nearly full: readiness then
    /// returns as soon as space does, without waiting for a write to prove it.
    disk: Arc<DiskWatch>,
    /// Bytes the store uses, as last measured (see `Writer::measure`); 0 when not measured.
    used_bytes: Arc<AtomicU64>,
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

    pub async fn set_endpoint_disabled(
        &self,
        name: &str,
        disabled: bool,
        notify: Option<NewDelivery>,
    ) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::EndpointDisabled {
            name: name.to_string(),
            disabled,
            notify,
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

    /// A handle whose operations arrive on the returned receiver, for a test to answer (or
    /// pass on to a real writer with [`WriterHandle::forward`]) as it likes.
    #[cfg(test)]
    pub(crate) fn for_test() -> (WriterHandle, mpsc::Receiver<WriteOp>) {
        let (ops_tx, ops_rx) = mpsc::channel(16);
        let handle = WriterHandle {
            ops_tx,
            healthy: Arc::new(AtomicBool::new(true)),
            latched: Arc::default(),
            disk: Arc::new(DiskWatch {
                full: AtomicBool::new(false),
                path: std::path::PathBuf::new(),
                free_space: |_| None,
            }),
            used_bytes: Arc::default(),
        };
        (handle, ops_rx)
    }

    #[cfg(test)]
    pub(crate) async fn forward(&self, op: WriteOp) -> Result<(), StoreError> {
        self.send(op).await
    }

    async fn send(&self, op: WriteOp) -> Result<(), StoreError> {
        self.ops_tx
            .send(op)
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Bytes the store uses, measured after commits when `store.max_bytes` is set.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    /// Whether the store refuses every write until hookrelay restarts (redb latched after a
    /// failed write): liveness then fails, so an orchestrator restarts the process, and redb
    /// repairs the file at open. Nothing acked is lost; nothing new is taken meanwhile.
    pub fn latched(&self) -> bool {
        self.latched.load(Ordering::Relaxed)
    }

    /// Marks the store latched, as a failed write inside redb does (for the scheduler's tests).
    #[cfg(test)]
    pub fn latch_for_test(&self) {
        self.latched.store(true, Ordering::Relaxed);
    }

    /// False after a failed commit (true again after the next successful one), and false for
    /// good once the writer thread has stopped. After writes were refused for lack of disk
    /// space, true again as soon as there is room (the next write will go through), so an
    /// idle sidecar's readiness comes back by itself.
    pub fn healthy(&self) -> bool {
        if self.ops_tx.is_closed() {
            return false;
        }
        self.healthy.load(Ordering::Relaxed)
            || (self.disk.full.load(Ordering::Relaxed)
                && (self.disk.free_space)(&self.disk.path).is_some_and(has_room))
    }
}

/// Whether writes were last refused for lack of disk space, and how to read the free space.
struct DiskWatch {
    full: AtomicBool,
    path: std::path::PathBuf,
    free_space: fn(&std::path::Path) -> Option<u64>,
}

/// Starts the writer thread. New pending work is announced on `enqueued_tx` after each commit.
pub fn spawn(
    store: &Store,
    metrics: Metrics,
    enqueued_tx: mpsc::UnboundedSender<Vec<Enqueued>>,
) -> std::io::Result<(WriterHandle, JoinHandle<()>)> {
    spawn_with_limit(store, metrics, enqueued_tx, 0)
}

/// As [`spawn`], measuring the store's size after commits when `max_bytes` is not 0.
pub fn spawn_with_limit(
    store: &Store,
    metrics: Metrics,
    enqueued_tx: mpsc::UnboundedSender<Vec<Enqueued>>,
    max_bytes: u64,
) -> std::io::Result<(WriterHandle, JoinHandle<()>)> {
    spawn_inner(store, metrics, enqueued_tx, max_bytes, free_space)
}

fn spawn_inner(
    store: &Store,
    metrics: Metrics,
    enqueued_tx: mpsc::UnboundedSender<Vec<Enqueued>>,
    max_bytes: u64,
    free_space: fn(&std::path::Path) -> Option<u64>,
) -> std::io::Result<(WriterHandle, JoinHandle<()>)> {
    let (mut writer, handle) = Writer::new(store, metrics, enqueued_tx, max_bytes, free_space)?;
    writer.measure(true);
    let join = std::thread::Builder::new()
        .name("hookrelay-writer".into())
        .spawn(move || writer.run())?;
    Ok((handle, join))
}

struct Writer {
    db: Arc<Database>,
    ops_rx: mpsc::Receiver<WriteOp>,
    enqueued_tx: mpsc::UnboundedSender<Vec<Enqueued>>,
    metrics: Metrics,
    /// Only the writer assigns delivery ids, so they are strictly increasing on disk.
    ids: IdGen,
    /// Where each stored idempotency claim is (see `idem.rs`); only this thread uses it.
    idem: IdemIndex,
    /// The index changes of the batch being applied, undone if its commit fails.
    idem_undo: Vec<Change>,
    /// Claims of deliveries created before this time (ms) were made by the version before the
    /// idempotency hash covered the method: only they may match in their legacy form.
    idem_legacy_before: u64,
    healthy: Arc<AtomicBool>,
    latched: Arc<AtomicBool>,
    disk: Arc<DiskWatch>,
    store: Store,
    /// `store.max_bytes`; 0 turns measuring off.
    max_bytes: u64,
    used_bytes: Arc<AtomicU64>,
    measured_at: Option<Instant>,
    live_counted_at: Option<Instant>,
    /// How free disk space is read: a seam, so a test can fill the disk without filling it.
    free_space: fn(&std::path::Path) -> Option<u64>,
    /// The room the batch being committed may still grow into, after its ingests took theirs
    /// (`None` when free space cannot be read); a replay takes its share when it runs.
    room: Option<Room>,
    /// When a write that did not fit was last logged.
    no_room_logged: Option<Instant>,
}

/// What applying an op produced, held until the commit that makes it true.
enum Outcome {
    Ingest(Result<IngestResult, StoreError>),
    Attempt(Result<(), StoreError>),
    Prune(Result<PruneResult, StoreError>),
    /// Endpoint disabling and pauses.
    Unit(Result<(), StoreError>),
    Cancel(Result<CancelResult, StoreError>),
    Replay(Result<(Id, BatchRecord), StoreError>),
}

impl Outcome {
    /// Takes out a redb failure the op met (see `commit_batch`), leaving other outcomes as
    /// they are.
    fn storage_error(self) -> Result<Outcome, StoreError> {
        fn split<T>(r: Result<T, StoreError>) -> Result<Result<T, StoreError>, StoreError> {
            match r {
                Err(e @ StoreError::Storage(_)) => Err(e),
                other => Ok(other),
            }
        }
        Ok(match self {
            Outcome::Ingest(r) => Outcome::Ingest(split(r)?),
            Outcome::Attempt(r) => Outcome::Attempt(split(r)?),
            Outcome::Prune(r) => Outcome::Prune(split(r)?),
            Outcome::Unit(r) => Outcome::Unit(split(r)?),
            Outcome::Cancel(r) => Outcome::Cancel(split(r)?),
            Outcome::Replay(r) => Outcome::Replay(split(r)?),
        })
    }
}

impl WriteOp {
    /// Hands the caller the outcome `Writer::apply` computed for this op; for an ingest,
    /// returns when the request arrived (for the ack-latency histogram).
    fn answer(self, outcome: Outcome) -> Option<Instant> {
        match (self, outcome) {
            (WriteOp::Ingest(w, tx), Outcome::Ingest(r)) => {
                let _ = tx.send(r);
                return Some(w.received);
            }
            (WriteOp::Attempt(_, tx), Outcome::Attempt(r)) => drop(tx.send(r)),
            (WriteOp::Prune { reply, .. }, Outcome::Prune(r)) => drop(reply.send(r)),
            (WriteOp::EndpointDisabled { reply, .. }, Outcome::Unit(r))
            | (WriteOp::Pause { reply, .. }, Outcome::Unit(r)) => drop(reply.send(r)),
            (WriteOp::Cancel(_, tx), Outcome::Cancel(r)) => drop(tx.send(r)),
            (WriteOp::Replay(_, tx), Outcome::Replay(r)) => drop(tx.send(r)),
            // `apply` answers each op with its own kind; this is only here to be total.
            (op, _) => op.refuse(&StoreError::CommitFailed(
                "internal error: an outcome of another kind of operation".into(),
            )),
        }
        None
    }

    /// Answers the caller with `e`, as a failed commit: nothing of the op was stored.
    fn refuse(self, e: &StoreError) {
        let err = || match e {
            // Already worded as a failed commit: not "commit failed: commit failed: ...".
            StoreError::CommitFailed(why) => StoreError::CommitFailed(why.clone()),
            other => StoreError::CommitFailed(other.to_string()),
        };
        match self {
            WriteOp::Ingest(_, tx) => drop(tx.send(Err(err()))),
            WriteOp::Attempt(_, tx) => drop(tx.send(Err(err()))),
            WriteOp::Prune { reply, .. } => drop(reply.send(Err(err()))),
            WriteOp::EndpointDisabled { reply, .. } => drop(reply.send(Err(err()))),
            WriteOp::Cancel(_, tx) => drop(tx.send(Err(err()))),
            WriteOp::Replay(_, tx) => drop(tx.send(Err(err()))),
            WriteOp::Pause { reply, .. } => drop(reply.send(Err(err()))),
        }
    }
}

/// Why a try at committing a batch stored nothing.
enum Failed {
    /// redb failed inside the op at this index of the batch.
    Op(usize, StoreError),
    /// The transaction itself failed (begin, shared tables, counts, commit).
    Batch(StoreError),
}

impl<E: Into<StoreError>> From<E> for Failed {
    fn from(e: E) -> Failed {
        Failed::Batch(e.into())
    }
}

impl Writer {
    /// A writer and its handle, without its thread (`spawn_inner` starts that).
    fn new(
        store: &Store,
        metrics: Metrics,
        enqueued_tx: mpsc::UnboundedSender<Vec<Enqueued>>,
        max_bytes: u64,
        free_space: fn(&std::path::Path) -> Option<u64>,
    ) -> std::io::Result<(Writer, WriterHandle)> {
        let (ops_tx, ops_rx) = mpsc::channel(MAX_BATCH * 4);
        let healthy = Arc::new(AtomicBool::new(true));
        let latched = Arc::new(AtomicBool::new(false));
        let used_bytes = Arc::new(AtomicU64::new(0));
        let disk = Arc::new(DiskWatch {
            full: AtomicBool::new(false),
            path: store.path().to_path_buf(),
            free_space,
        });
        let writer = Writer {
            db: store.db(),
            store: store.clone(),
            ops_rx,
            enqueued_tx,
            metrics,
            // Not a guess on failure: ids restarted from the clock could sort before stored
            // ones after a clock step back.
            ids: IdGen::after(
                store
                    .last_id()
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            ),
            idem: store
                .idem_index()
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            idem_undo: Vec::new(),
            idem_legacy_before: store
                .idem_method_since()
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            healthy: healthy.clone(),
            latched: latched.clone(),
            disk: disk.clone(),
            max_bytes,
            used_bytes: used_bytes.clone(),
            measured_at: None,
            live_counted_at: None,
            free_space,
            room: None,
            no_room_logged: None,
        };
        let handle = WriterHandle {
            ops_tx,
            healthy,
            latched,
            disk,
            used_bytes,
        };
        Ok((writer, handle))
    }

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
            let pruned = batch.iter().any(|op| matches!(op, WriteOp::Prune { .. }));
            self.commit_batch(&mut batch);
            self.measure(pruned);
        }
        tracing::debug!("store writer: all senders gone, stopping");
    }

    /// Measures the bytes the store uses, at most once per `MEASURE_EVERY` unless `now`. The
    /// file's size is cheap to read; redb reuses freed pages but never shrinks the file, so when
    /// the file is over the limit the live bytes are counted from the B-trees instead, which lets
    /// ingest accept again once pruning has freed space.
    fn measure(&mut self, now: bool) {
        if self.max_bytes == 0 {
            return;
        }
        if !now
            && self
                .measured_at
                .is_some_and(|t| t.elapsed() < MEASURE_EVERY)
        {
            return;
        }
        self.measured_at = Some(Instant::now());
        let file = self.store.file_bytes();
        let recently_counted = self
            .live_counted_at
            .is_some_and(|t| t.elapsed() < COUNT_LIVE_EVERY);
        let used = if file <= self.max_bytes {
            file
        } else if recently_counted && !now {
            return;
        } else {
            self.live_counted_at = Some(Instant::now());
            match self.live_bytes() {
                Ok(live) => live.min(file),
                Err(e) => {
                    tracing::warn!(error = %e, "could not measure the store; using the file size");
                    file
                }
            }
        };
        self.used_bytes.store(used, Ordering::Relaxed);
    }

    /// Adds what a committed batch's new webhooks take to the bytes in use, so that between
    /// measurements (at most once a second; a count of the live bytes at most once a minute
    /// while the file is over `store.max_bytes`) ingest sees the store grow with every commit
    /// instead of overshooting the limit by a second's or a minute's traffic. A replay copies
    /// bodies this op does not carry: it is measured afresh instead.
    fn grew(&mut self, batch: &[WriteOp], outcomes: &[Outcome]) {
        if self.max_bytes == 0 {
            return;
        }
        let mut bytes = 0u64;
        for (op, outcome) in batch.iter().zip(outcomes) {
            match (op, outcome) {
                // Only what was created: a duplicate or a reused key wrote nothing.
                (WriteOp::Ingest(w, _), Outcome::Ingest(Ok(IngestResult::Created { .. }))) => {
                    bytes += ingest_bytes(w);
                }
                (WriteOp::Replay(..), _) => self.measured_at = None,
                _ => {}
            }
        }
        self.used_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn live_bytes(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_write()?;
        let stats = txn.stats()?;
        let live = stats.stored_bytes() + stats.metadata_bytes();
        txn.abort()?;
        Ok(live)
    }

    /// Refuses the ops that grow the store (new webhooks and replays) when the disk lacks room
    /// for them (`DiskFull` below the reserve, `NoRoom` for one that does not fit above it),
    /// before redb sees them: a write that fails inside redb latches the database
    /// until it is reopened, while a refusal here leaves it healthy, so the sidecar recovers by
    /// itself when space returns. Each ingest takes its share of the room above the reserve
    /// (`Room`), in order, so one batch of many large bodies cannot run the disk out inside a
    /// commit; a replay, whose bodies only its op reads, takes its share when it runs. Below the
    /// reserve nothing that grows the store goes through. Small bookkeeping writes still do, out
    /// of the reserve: attempt records (the request was already sent; refusing its record would
    /// only send it again), pauses, cancels, endpoint disabling, and prunes, which are what gives
    /// space back. Returns whether the disk is below the reserve (the store is then unready).
    fn refuse_when_disk_is_full(&mut self, batch: &mut Vec<WriteOp>) -> bool {
        self.room = None;
        let Some(free) = (self.free_space)(self.store.path()) else {
            return false;
        };
        let mut room = Room::new(free);
        let full = room.is_full();
        // The common case, without rebuilding the batch: everything fits.
        let mut probe = room;
        if !full
            && batch.iter().all(|op| match op {
                WriteOp::Ingest(w, _) => probe.take(growth(ingest_bytes(w))),
                _ => true,
            })
        {
            self.room = Some(probe);
            return false;
        }
        if full {
            // Unready before any refusal is answered: a caller told "the disk is full" then
            // finds the store unready. Only a store that was healthy (or already refusing for
            // lack of space) is unready for that reason alone: one whose last commit failed
            // stays unready when space returns.
            if self.healthy.load(Ordering::Relaxed) || self.disk.full.load(Ordering::Relaxed) {
                self.disk.full.store(true, Ordering::Relaxed);
            }
            if self.healthy.swap(false, Ordering::Relaxed) {
                tracing::error!(
                    free_bytes = free,
                    "disk nearly full: refusing new webhooks and replays until space returns"
                );
            }
        }
        let mut no_room = 0usize;
        let mut kept = Vec::with_capacity(batch.len());
        for op in batch.drain(..) {
            let needed = match &op {
                WriteOp::Ingest(w, _) => Some(growth(ingest_bytes(w))),
                WriteOp::Replay(..) => Some(0),
                _ => None,
            };
            match needed {
                Some(_) if full => op.refuse(&StoreError::DiskFull { free }),
                Some(needed) if !room.take(needed) => {
                    no_room += 1;
                    op.refuse(&StoreError::NoRoom { needed, free });
                }
                _ => kept.push(op),
            }
        }
        *batch = kept;
        self.room = Some(room);
        if no_room > 0
            && self
                .no_room_logged
                .is_none_or(|t| t.elapsed() >= NO_ROOM_LOG_EVERY)
        {
            self.no_room_logged = Some(Instant::now());
            tracing::warn!(
                refused = no_room,
                free_bytes = free,
                "writes that do not fit in the free disk space above the reserve are refused (at most one such line a minute)"
            );
        }
        // Below the reserve the store is not ready, even for a batch that grows nothing (a
        // prune's commit is no recovery). Above it the store is: what did not fit was refused
        // alone, and the rest goes through.
        full
    }

    /// Applies the batch in one `Durability::Immediate` transaction and answers every op once
    /// it is committed. If redb fails inside an op (which may have written part of its rows),
    /// nothing of that try is committed: the op is refused and the others are tried again
    /// without it, so a failure that repeats (a damaged page one op keeps meeting) costs only
    /// that op. After `MAX_OPS_REFUSED` such ops, or if the transaction itself fails, every op
    /// of the batch is refused.
    fn commit_batch(&mut self, batch: &mut Vec<WriteOp>) {
        let started = Instant::now();
        let size = batch.len();
        let refused = self.refuse_when_disk_is_full(batch);
        if batch.is_empty() {
            return;
        }
        let mut ops_refused = 0;
        let result = loop {
            let tried = self.try_commit(batch);
            if let Err(Failed::Op(_, e) | Failed::Batch(e)) = &tried {
                self.note_latched(e);
            }
            match tried {
                Err(Failed::Op(i, e)) if ops_refused < MAX_OPS_REFUSED => {
                    ops_refused += 1;
                    tracing::error!(
                        error = %e,
                        batch = batch.len(),
                        "an operation failed in the store; it is refused and its batch tried again without it"
                    );
                    batch.remove(i).refuse(&StoreError::CommitFailed(format!(
                        "the operation failed in the store: {e}"
                    )));
                    if batch.is_empty() {
                        // Nothing left to commit (a lone op failed): no empty commit, and no
                        // word on the store's health either way.
                        return;
                    }
                }
                Err(Failed::Op(_, e)) => {
                    break Err(StoreError::CommitFailed(format!(
                        "{MAX_OPS_REFUSED} operations of the batch failed in the store, then another: {e}"
                    )));
                }
                Err(Failed::Batch(e)) => break Err(e),
                Ok(done) => break Ok(done),
            }
        };
        match result {
            Ok((outcomes, enqueued)) => {
                // A batch that had to refuse webhooks for lack of disk is not a recovery.
                self.healthy.store(!refused, Ordering::Relaxed);
                if !refused {
                    self.disk.full.store(false, Ordering::Relaxed);
                }
                self.grew(batch, &outcomes);
                self.metrics
                    .commit_duration
                    .observe(started.elapsed().as_secs_f64());
                self.metrics.commit_batch_size.observe(size as f64);
                if !enqueued.is_empty() {
                    // The scheduler may be gone during shutdown; the work is on disk either way.
                    let _ = self.enqueued_tx.send(enqueued);
                }
                for (op, outcome) in batch.drain(..).zip(outcomes) {
                    if let Some(received) = op.answer(outcome) {
                        self.metrics
                            .ack_duration
                            .observe(received.elapsed().as_secs_f64());
                    }
                }
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                // Not for lack of space: readiness waits for a commit that goes through.
                self.disk.full.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, batch = batch.len(), "store commit failed; the batch is refused");
                for op in batch.drain(..) {
                    op.refuse(&e);
                }
            }
        }
    }

    /// Notes a store that redb latched: it refuses every write after one failed (a full disk
    /// that the space check did not foresee, an I/O error) until the file is reopened.
    fn note_latched(&self, e: &StoreError) {
        if matches!(e, StoreError::Storage(redb::Error::PreviousIo))
            && !self.latched.swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                "the store refuses every write since an earlier one failed; it is reopened only by \
                 a restart: /healthz now fails so that an orchestrator restarts hookrelay, and no \
                 delivery attempt starts meanwhile, since its result could not be recorded \
                 (nothing acked is lost; redb repairs the file at open)"
            );
        }
    }

    /// One try at committing `batch`: every op's outcome (in order) and the new pending work,
    /// or why nothing was committed. On failure the writer's index of claims is put back.
    fn try_commit(&mut self, batch: &[WriteOp]) -> Result<(Vec<Outcome>, Vec<Enqueued>), Failed> {
        self.idem_undo.clear();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut enqueued = Vec::new();
        let result = (|| -> Result<(), Failed> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            let mut delta = CountDelta::default();
            let mut hot: Option<HotTables> = None;
            // Each try starts from the room left after the batch's ingests took theirs.
            let mut room = self.room;
            for (i, op) in batch.iter().enumerate() {
                let outcome =
                    self.apply(&txn, &mut hot, op, &mut enqueued, &mut delta, &mut room)?;
                outcomes.push(outcome.storage_error().map_err(|e| Failed::Op(i, e))?);
            }
            drop(hot);
            delta.write(&txn)?;
            txn.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => Ok((outcomes, enqueued)),
            Err(f) => {
                self.idem.revert(&mut self.idem_undo);
                Err(f)
            }
        }
    }

    /// Applies one op. Ingests and attempts (nearly every op) share `hot`, the tables opened
    /// once per run of them; other ops open their own, so the shared set is closed before one
    /// runs. Failing to open the shared set fails the whole try, not one op.
    fn apply<'t>(
        &mut self,
        txn: &'t WriteTransaction,
        hot: &mut Option<HotTables<'t>>,
        op: &WriteOp,
        enqueued: &mut Vec<Enqueued>,
        delta: &mut CountDelta,
        room: &mut Option<Room>,
    ) -> Result<Outcome, Failed> {
        if !matches!(op, WriteOp::Ingest(..) | WriteOp::Attempt(..)) {
            *hot = None;
        }
        Ok(match op {
            WriteOp::Ingest(w, _) => {
                let t = HotTables::shared(hot, txn)?;
                Outcome::Ingest(self.ingest(t, w, enqueued, delta))
            }
            WriteOp::Attempt(w, _) => {
                let t = HotTables::shared(hot, txn)?;
                Outcome::Attempt(record_attempt(t, &mut self.ids, w, enqueued, delta))
            }
            WriteOp::Prune {
                now, retention_ms, ..
            } => Outcome::Prune(prune(
                txn,
                *now,
                *retention_ms,
                delta,
                &mut self.idem,
                &mut self.idem_undo,
            )),
            WriteOp::Cancel(id, _) => Outcome::Cancel(operator::cancel(txn, *id, delta)),
            WriteOp::Replay(w, _) => Outcome::Replay(operator::replay(
                txn,
                &mut self.ids,
                w,
                enqueued,
                delta,
                room.as_mut(),
            )),
            WriteOp::Pause { host, pause, .. } => {
                Outcome::Unit(operator::set_pause(txn, host.as_deref(), pause.as_ref()))
            }
            WriteOp::EndpointDisabled {
                name,
                disabled,
                notify,
                ..
            } => Outcome::Unit(
                set_endpoint_disabled(txn, name, *disabled).and_then(|changed| match notify {
                    Some(d) if changed && *disabled => {
                        let t = &mut HotTables::open(txn)?;
                        create(t, &mut self.ids, d, clock::now_ms(), enqueued, delta).map(drop)
                    }
                    _ => Ok(()),
                }),
            ),
        })
    }

    /// Whether a stored claim was made by the version before the method counted (its first
    /// delivery is older than the mark the upgraded store got at its first open).
    fn made_before_upgrade(&self, found: &IdemRecord) -> bool {
        found
            .deliveries
            .first()
            .is_some_and(|id| id.ms() < self.idem_legacy_before)
    }

    fn ingest(
        &mut self,
        t: &mut HotTables,
        w: &IngestWrite,
        enqueued: &mut Vec<Enqueued>,
        delta: &mut CountDelta,
    ) -> Result<IngestResult, StoreError> {
        let now = clock::now_ms();
        if let Some(claim) = &w.idem {
            let mut stored = None;
            for at in self.idem.candidates(&claim.key) {
                if let Some(v) = t.idem_keys.get((at, &claim.key))? {
                    stored = Some((at, decode::<IdemRecord>("idem_keys", v.value())?));
                    break;
                }
            }
            if stored.is_none()
                && let Some((key, body_hash)) = &claim.legacy
            {
                for at in self.idem.candidates(key) {
                    if let Some(v) = t.idem_keys.get((at, key))? {
                        let found = decode::<IdemRecord>("idem_keys", v.value())?;
                        if found.expires_at > now && self.made_before_upgrade(&found) {
                            return Ok(if found.body_hash == *body_hash {
                                IngestResult::Duplicate {
                                    event_id: found.event_id,
                                    ids: found.deliveries,
                                }
                            } else {
                                IngestResult::KeyReused
                            });
                        }
                        break;
                    }
                }
            }
            if let Some((at, found)) = stored {
                if found.expires_at > now {
                    // Under the same key, the previous version's hash of the same request (a
                    // PUT, whose hash now covers its method) matches too.
                    let legacy_hash = self.made_before_upgrade(&found)
                        && claim.legacy.as_ref().is_some_and(|(key, hash)| {
                            *key == claim.key && *hash == found.body_hash
                        });
                    return Ok(if found.body_hash == claim.body_hash || legacy_hash {
                        IngestResult::Duplicate {
                            event_id: found.event_id,
                            ids: found.deliveries,
                        }
                    } else {
                        IngestResult::KeyReused
                    });
                }
                // Expired but not yet pruned: the key is free again.
                t.idem_keys.remove((at, &claim.key))?;
                self.idem
                    .apply(Change::Removed(claim.key, at), &mut self.idem_undo);
            }
        }
        let mut ids = Vec::with_capacity(w.deliveries.len());
        for d in &w.deliveries {
            ids.push(create(t, &mut self.ids, d, now, enqueued, delta)?);
        }
        if let Some(claim) = &w.idem {
            let record = IdemRecord {
                body_hash: claim.body_hash,
                expires_at: claim.expires_at,
                event_id: w.event_id,
                deliveries: ids.clone(),
            };
            t.idem_keys
                .insert((claim.expires_at, &claim.key), encode(&record).as_slice())?;
            self.idem.apply(
                Change::Added(claim.key, claim.expires_at),
                &mut self.idem_undo,
            );
        }
        Ok(IngestResult::Created {
            event_id: w.event_id,
            ids,
        })
    }
}

/// The tables ingests and attempts write, opened once for a run of such ops rather than per op.
struct HotTables<'t> {
    deliveries: redb::Table<'t, u128, &'static [u8]>,
    payloads: redb::Table<'t, u128, &'static [u8]>,
    due: redb::Table<'t, (u64, u128), &'static str>,
    by_status: redb::Table<'t, (u8, u128), ()>,
    attempts: redb::Table<'t, (u128, u32), &'static [u8]>,
    finished: redb::Table<'t, (u64, u128), ()>,
    idem_keys: redb::Table<'t, (u64, &'static [u8; 32]), &'static [u8]>,
}

impl<'t> HotTables<'t> {
    /// The set in `hot`, opened first if it is not open.
    fn shared<'h>(
        hot: &'h mut Option<HotTables<'t>>,
        txn: &'t WriteTransaction,
    ) -> Result<&'h mut HotTables<'t>, StoreError> {
        Ok(match hot {
            Some(t) => t,
            None => hot.insert(HotTables::open(txn)?),
        })
    }

    fn open(txn: &'t WriteTransaction) -> Result<HotTables<'t>, StoreError> {
        Ok(HotTables {
            deliveries: txn.open_table(DELIVERIES)?,
            payloads: txn.open_table(PAYLOADS)?,
            due: txn.open_table(DUE)?,
            by_status: txn.open_table(BY_STATUS)?,
            attempts: txn.open_table(ATTEMPTS)?,
            finished: txn.open_table(FINISHED)?,
            idem_keys: txn.open_table(IDEM_KEYS)?,
        })
    }
}

/// Stores one new pending delivery and announces it to the scheduler; its id.
fn create(
    t: &mut HotTables,
    ids: &mut IdGen,
    d: &NewDelivery,
    now: u64,
    enqueued: &mut Vec<Enqueued>,
    delta: &mut CountDelta,
) -> Result<Id, StoreError> {
    let id = ids.next(now);
    t.deliveries.insert(id.0, d.record.as_slice())?;
    t.payloads.insert(id.0, d.payload.as_slice())?;
    t.due.insert((d.next_at, id.0), d.host.as_str())?;
    t.by_status.insert((Status::Pending.code(), id.0), ())?;
    delta.add(Status::Pending, 1);
    enqueued.push(Enqueued {
        next_at: d.next_at,
        id,
        host: d.host.clone(),
    });
    Ok(id)
}

fn record_attempt(
    t: &mut HotTables,
    ids: &mut IdGen,
    w: &AttemptWrite,
    enqueued: &mut Vec<Enqueued>,
    delta: &mut CountDelta,
) -> Result<(), StoreError> {
    let existing = t
        .deliveries
        .get(w.id.0)?
        .map(|v| decode::<DeliveryRecord>("deliveries", v.value()))
        .transpose()?;
    let Some(mut record) = existing else {
        // Pruned or never existed: nothing to attach the attempt to.
        return Ok(());
    };
    t.attempts
        .insert((w.id.0, w.attempt.number), encode(&w.attempt).as_slice())?;
    let now = w.attempt.started_at + w.attempt.duration_ms;
    record.attempt_count = record.attempt_count.max(w.attempt.number);
    record.last_classification = Some(w.attempt.classification);
    record.last_status_code = w.attempt.status_code;
    record.updated_at = now;
    if record.status == Status::Pending {
        if let Some(old) = record.next_attempt_at {
            t.due.remove((old, w.id.0))?;
        }
        match w.next {
            NextState::Retry { next_at } => {
                record.next_attempt_at = Some(next_at);
                t.due.insert((next_at, w.id.0), w.host.as_str())?;
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
                t.by_status.remove((Status::Pending.code(), w.id.0))?;
                t.by_status.insert((status.code(), w.id.0), ())?;
                delta.moved(Status::Pending, status);
                t.finished.insert((now, w.id.0), ())?;
                if let Some(d) = w.notify.as_ref().filter(|_| status == Status::Failed) {
                    create(t, ids, d, now, enqueued, delta)?;
                }
            }
        }
    }
    t.deliveries.insert(w.id.0, encode(&record).as_slice())?;
    Ok(())
}

/// Whether it changed anything.
fn set_endpoint_disabled(
    txn: &WriteTransaction,
    name: &str,
    disabled: bool,
) -> Result<bool, StoreError> {
    let mut meta = txn.open_table(META)?;
    let mut set: BTreeSet<String> = meta
        .get(DISABLED_ENDPOINTS)?
        .map(|v| decode("meta", v.value()))
        .transpose()?
        .unwrap_or_default();
    let changed = if disabled {
        set.insert(name.to_string())
    } else {
        set.remove(name)
    };
    if changed {
        meta.insert(DISABLED_ENDPOINTS, encode(&set).as_slice())?;
    }
    Ok(changed)
}

fn prune(
    txn: &WriteTransaction,
    now: u64,
    retention_ms: u64,
    delta: &mut CountDelta,
    idem: &mut IdemIndex,
    undo: &mut Vec<Change>,
) -> Result<PruneResult, StoreError> {
    let mut result = PruneResult::default();
    {
        let mut keys = txn.open_table(IDEM_KEYS)?;
        let mut expired = Vec::new();
        for row in keys.range((0, &[0u8; 32])..)? {
            let (k, _) = row?;
            let (at, hash) = k.value();
            if at > now || expired.len() >= PRUNE_LIMIT {
                result.next_due = Some(at);
                break;
            }
            expired.push((at, *hash));
        }
        for (at, hash) in &expired {
            keys.remove((*at, hash))?;
            idem.apply(Change::Removed(*hash, *at), undo);
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
            // A record that no longer decodes is pruned whole all the same (stopping here would
            // leave its other rows behind for good): its index row is then found by trying
            // each status.
            let statuses = match decode::<DeliveryRecord>("deliveries", record.value()) {
                Ok(r) => vec![r.status],
                Err(_) => Status::ALL.to_vec(),
            };
            drop(record);
            for status in statuses {
                if by_status.remove((status.code(), *id))?.is_some() {
                    delta.add(status, -1);
                    break;
                }
            }
        }
        payloads.remove(*id)?;
        attempts.retain_in((*id, 0)..=(*id, u32::MAX), |_, _| false)?;
    }
    result.deliveries = old.len();
    // A replay batch's audit record is kept as long as a finished delivery (its id says when it
    // was made: ids start with their milliseconds), and for as long as a delivery it created is
    // still stored, so a delivery's `batch_id` never names a batch that is gone. Such a batch is
    // looked at again on each pass; the deliveries keeping it are pruned by the loop above, in
    // an earlier transaction or this one.
    let mut batches = txn.open_table(BATCHES)?;
    let first_kept = Id::from_parts(cutoff.min(MAX_ID_MS), 0).0;
    let mut old_batches = Vec::new();
    for (looked_at, row) in batches.iter()?.enumerate() {
        let (k, v) = row?;
        let id = k.value();
        if id >= first_kept || old_batches.len() >= PRUNE_LIMIT {
            let due = Id(id).ms().saturating_add(retention_ms);
            result.next_due = Some(result.next_due.map_or(due, |d| d.min(due)));
            break;
        }
        if looked_at >= 4 * PRUNE_LIMIT {
            // Old batches kept by their deliveries: the rest wait for a later pass.
            break;
        }
        // A record that no longer decodes keeps nothing alive.
        let created = decode::<BatchRecord>("batches", v.value())
            .map(|b| b.created)
            .unwrap_or_default();
        let mut live = false;
        for new in created.iter().filter_map(|(_, new)| *new) {
            if deliveries.get(new.0)?.is_some() {
                live = true;
                break;
            }
        }
        if !live {
            old_batches.push(id);
        }
    }
    for id in &old_batches {
        batches.remove(*id)?;
    }
    result.batches = old_batches.len();
    Ok(result)
}

/// The largest millisecond count an id holds (48 bits).
const MAX_ID_MS: u64 = (1 << 48) - 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeliveryId;
    use redb::ReadableTableMetadata;

    /// The test's disk: how many bytes are free.
    static FREE: AtomicU64 = AtomicU64::new(u64::MAX);

    fn test_disk(_: &std::path::Path) -> Option<u64> {
        Some(FREE.load(Ordering::SeqCst))
    }

    /// Between measurements of the store, every committed webhook adds to the bytes in use, so
    /// ingest sees `store.max_bytes` reached within a batch, not a minute later.
    #[tokio::test]
    async fn bytes_in_use_grow_with_each_commit_between_measurements() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        // A limit the empty file is already over: the live bytes are counted at start, and
        // not again for a minute. (Not `test_disk`: the full-disk test empties that one.)
        let roomy = |_: &std::path::Path| Some(u64::MAX);
        let (writer, join) = spawn_inner(&store, Metrics::new(), tx, 1, roomy).unwrap();
        let before = writer.used_bytes();
        let mut big = one_delivery();
        big.deliveries[0].payload = vec![7u8; 100_000];
        assert!(matches!(
            writer.ingest(big).await,
            Ok(IngestResult::Created { .. })
        ));
        let after = writer.used_bytes();
        assert!(after >= before + 100_000, "{before} -> {after}");
        drop(writer);
        join.join().unwrap();
    }

    /// A duplicate (or a reused key) writes nothing, so it adds nothing to the bytes in use.
    #[test]
    fn only_created_webhooks_add_to_the_bytes_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let roomy = |_: &std::path::Path| Some(u64::MAX);
        let (mut writer, handle) = Writer::new(&store, Metrics::new(), tx, 1, roomy).unwrap();
        writer.measure(true);
        let before = handle.used_bytes();
        let (first, mut first_rx) = keyed_ingest(3, 1);
        writer.commit_batch(&mut vec![first]);
        created(&mut first_rx);
        let after_first = handle.used_bytes();
        assert!(after_first > before, "{before} -> {after_first}");
        let (again, mut again_rx) = keyed_ingest(3, 1);
        writer.commit_batch(&mut vec![again]);
        assert!(matches!(
            again_rx.try_recv().unwrap(),
            Ok(IngestResult::Duplicate { .. })
        ));
        assert_eq!(handle.used_bytes(), after_first);
    }

    /// Readiness comes back with disk space only when lack of space was the reason it went: a
    /// store whose last commit failed (redb latched) stays unready.
    #[test]
    fn a_failed_commit_stays_unready_when_a_full_disk_empties() {
        static FREE_HERE: AtomicU64 = AtomicU64::new(u64::MAX);
        fn disk(_: &std::path::Path) -> Option<u64> {
            Some(FREE_HERE.load(Ordering::SeqCst))
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let (mut writer, handle) = Writer::new(&store, Metrics::new(), tx, 0, disk).unwrap();
        // What a failed commit leaves.
        writer.healthy.store(false, Ordering::Relaxed);
        writer.disk.full.store(false, Ordering::Relaxed);
        FREE_HERE.store(1 << 20, Ordering::SeqCst);
        let (op, _op_rx) = keyed_ingest(1, 1);
        writer.commit_batch(&mut vec![op]);
        FREE_HERE.store(u64::MAX, Ordering::SeqCst);
        assert!(!handle.healthy(), "ready on a store whose commit failed");
    }

    fn one_delivery() -> IngestWrite {
        IngestWrite {
            idem: None,
            event_id: None,
            deliveries: vec![NewDelivery {
                record: encode(&crate::model::DeliveryRecord::pending(
                    "POST".into(),
                    "http://h/".into(),
                    None,
                    None,
                    None,
                    0,
                    0,
                )),
                payload: encode(&0u32),
                next_at: 0,
                host: "h:80".into(),
            }],
            received: Instant::now(),
        }
    }

    #[tokio::test]
    async fn a_full_disk_refuses_writes_without_harm_and_recovers_when_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (writer, join) = spawn_inner(&store, Metrics::new(), tx, 0, test_disk).unwrap();
        let first = match writer.ingest(one_delivery()).await {
            Ok(IngestResult::Created { ids, .. }) => ids[0],
            other => panic!("{other:?}"),
        };
        assert!(writer.healthy());

        FREE.store(1 << 20, Ordering::SeqCst);
        let refused = writer.ingest(one_delivery()).await.unwrap_err();
        assert!(
            refused.to_string().contains("disk is nearly full"),
            "{refused}"
        );
        assert!(!writer.healthy(), "readiness turns off");
        // Pruning, which gives space back, still runs, and does not count as a recovery.
        assert!(writer.prune(0, 0).await.is_ok());
        assert!(!writer.healthy(), "still not ready while the disk is full");
        // An attempt's record still goes through: the request was already sent.
        let attempt = AttemptWrite {
            id: first,
            host: "h:80".into(),
            attempt: crate::model::Attempt {
                number: 1,
                started_at: 1,
                duration_ms: 1,
                status_code: Some(503),
                classification: crate::model::Classification::Http5xxRetryable,
                error: None,
                response_snippet: None,
            },
            next: NextState::Retry { next_at: 10 },
            notify: None,
        };
        writer.attempt(attempt).await.unwrap();
        assert_eq!(store.attempts(first).unwrap().len(), 1);
        // Nothing acked was touched: the first delivery is still there, the refused one is not.
        assert_eq!(store.for_each_due(|_| {}).unwrap(), 1);

        FREE.store(u64::MAX, Ordering::SeqCst);
        // Ready again as soon as there is room: an idle sidecar must not wait for a write.
        assert!(writer.healthy(), "ready again once space returned");
        assert!(matches!(
            writer.ingest(one_delivery()).await,
            Ok(IngestResult::Created { .. })
        ));
        assert!(writer.healthy(), "recovered by itself");
        assert_eq!(store.for_each_due(|_| {}).unwrap(), 2);
        assert_eq!(rx.recv().await.unwrap().len(), 1);
        drop(writer);
        join.join().unwrap();
    }

    /// A writer on a fresh store in a temporary directory (kept alive by the returned guard).
    fn started() -> (tempfile::TempDir, Store, WriterHandle, JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // The scheduler's end is dropped: these tests read the store, not the announcements.
        let (tx, _) = mpsc::unbounded_channel();
        let (writer, join) = spawn(&store, Metrics::new(), tx).unwrap();
        (dir, store, writer, join)
    }

    /// Ingests one delivery and fails it (a replayable source); returns its id.
    async fn failed_delivery(writer: &WriterHandle) -> Id {
        let id = match writer.ingest(one_delivery()).await {
            Ok(IngestResult::Created { ids, .. }) => ids[0],
            other => panic!("{other:?}"),
        };
        let attempt = AttemptWrite {
            id,
            host: "h:80".into(),
            attempt: crate::model::Attempt {
                number: 1,
                started_at: 1,
                duration_ms: 1,
                status_code: Some(400),
                classification: crate::model::Classification::Http4xxPermanent,
                error: None,
                response_snippet: None,
            },
            next: NextState::Failed,
            notify: None,
        };
        writer.attempt(attempt).await.unwrap();
        id
    }

    #[tokio::test]
    async fn a_replay_that_meets_a_missing_payload_creates_nothing() {
        let (_dir, store, writer, join) = started();
        let (a, b) = (
            failed_delivery(&writer).await,
            failed_delivery(&writer).await,
        );
        // The second source's payload is gone (as if the file were damaged).
        let txn = store.db().begin_write().unwrap();
        txn.open_table(PAYLOADS).unwrap().remove(b.0).unwrap();
        txn.commit().unwrap();

        let replay = ReplayWrite {
            requested: vec![("a".into(), Some(a)), ("b".into(), Some(b))],
            filter: None,
            dry_run: false,
            reason: None,
        };
        let refused = writer.replay(replay).await.unwrap_err();
        assert!(refused.to_string().contains("no payload"), "{refused}");
        // Not even the first source's copy was created: nothing pending, nothing due.
        assert_eq!(store.counts().unwrap().get(Status::Pending), 0);
        assert_eq!(store.for_each_due(|_| {}).unwrap(), 0);
        drop(writer);
        join.join().unwrap();
    }

    #[tokio::test]
    async fn prune_removes_a_record_that_no_longer_decodes_with_its_index_row() {
        let (_dir, store, writer, join) = started();
        let id = failed_delivery(&writer).await;
        assert_eq!(store.counts().unwrap().get(Status::Failed), 1);
        let txn = store.db().begin_write().unwrap();
        txn.open_table(DELIVERIES)
            .unwrap()
            .insert(id.0, [0xffu8; 3].as_slice())
            .unwrap();
        txn.commit().unwrap();

        let pruned = writer.prune(u64::MAX / 2, 0).await.unwrap();
        assert_eq!(pruned.deliveries, 1);
        assert_eq!(
            store.counts().unwrap().get(Status::Failed),
            0,
            "counts follow"
        );
        let txn = store.db().begin_read().unwrap();
        let index = txn.open_table(BY_STATUS).unwrap();
        assert_eq!(index.iter().unwrap().count(), 0, "no index row left behind");
        assert!(
            txn.open_table(PAYLOADS)
                .unwrap()
                .get(id.0)
                .unwrap()
                .is_none()
        );
        drop(writer);
        join.join().unwrap();
    }

    /// Replays `id` (a real batch, not a dry run); the batch's id.
    async fn replay_one(writer: &WriterHandle, id: Id) -> Id {
        let w = ReplayWrite {
            requested: vec![(DeliveryId(id).to_string(), Some(id))],
            filter: None,
            dry_run: false,
            reason: None,
        };
        writer.replay(w).await.unwrap().0
    }

    /// A replay batch's audit record is pruned with the finished deliveries, once it is older
    /// than the retention and no delivery it created is still stored, and not before.
    #[tokio::test]
    async fn prune_removes_replay_batches_older_than_the_retention() {
        let (_dir, store, writer, join) = started();
        let id = failed_delivery(&writer).await;
        let batch = replay_one(&writer, id).await;
        let created = store.batch(batch).unwrap().unwrap().created[0].1.unwrap();
        let retention = 60_000;
        let kept = writer
            .prune(batch.ms() + retention - 1, retention)
            .await
            .unwrap();
        assert_eq!(kept.batches, 0);
        assert!(store.batch(batch).unwrap().is_some());
        assert!(
            kept.next_due.is_some_and(|at| at <= batch.ms() + retention),
            "{:?}",
            kept.next_due
        );
        // Old enough, but the delivery it created is still pending: its `batch_id` must keep
        // naming a batch that exists.
        let kept = writer
            .prune(batch.ms() + retention + 1, retention)
            .await
            .unwrap();
        assert_eq!(kept.batches, 0);
        assert!(store.batch(batch).unwrap().is_some());
        // Once that delivery has finished and been pruned in turn, the batch goes with it.
        assert!(matches!(
            writer.cancel(created).await.unwrap(),
            CancelResult::Cancelled { .. }
        ));
        // (The replayed delivery finished before the batch was made: the pass above pruned it.)
        let later = clock::now_ms().max(batch.ms()) + retention + 1;
        let pruned = writer.prune(later, retention).await.unwrap();
        assert_eq!(pruned.deliveries, 1);
        assert_eq!(pruned.batches, 1);
        assert!(store.batch(batch).unwrap().is_none());
        assert!(store.batches(None, 10).unwrap().is_empty());
        // A time past what an id's 48 bits of milliseconds hold prunes everything, without
        // wrapping around to a small cutoff (a dry run creates nothing to keep it).
        let w = ReplayWrite {
            requested: vec![(DeliveryId(id).to_string(), Some(id))],
            filter: None,
            dry_run: true,
            reason: None,
        };
        let again = writer.replay(w).await.unwrap().0;
        assert!(store.batch(again).unwrap().is_some());
        let pruned = writer.prune((1 << 48) + 5, 0).await.unwrap();
        assert_eq!(pruned.batches, 1);
        assert!(store.batch(again).unwrap().is_none());
        drop(writer);
        join.join().unwrap();
    }

    /// A store whose table `broken` no longer has the type the code expects, so an op that
    /// opens it meets a redb failure (`TableError`) inside a batch; and a writer without its
    /// thread, so a test can hand it a batch, with the scheduler's end of its announcements.
    fn writer_with_a_broken_table(
        broken: &str,
    ) -> (
        tempfile::TempDir,
        Store,
        Writer,
        WriterHandle,
        mpsc::UnboundedReceiver<Vec<Enqueued>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        // Not `test_disk`: the full-disk test empties that one while others run.
        let roomy = |_: &std::path::Path| Some(u64::MAX);
        // The writer first: it reads the tables at start (a broken one stops it there).
        let (writer, handle) = Writer::new(&store, Metrics::new(), tx, 0, roomy).unwrap();
        let txn = store.db().begin_write().unwrap();
        let wrong = redb::TableDefinition::<u64, u64>::new(broken);
        assert!(txn.delete_table(wrong).unwrap());
        txn.open_table(wrong).unwrap();
        txn.commit().unwrap();
        (dir, store, writer, handle, rx)
    }

    fn announced(rx: &mut mpsc::UnboundedReceiver<Vec<Enqueued>>) -> Vec<Id> {
        let mut ids = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            ids.extend(batch.into_iter().map(|e| e.id));
        }
        ids
    }

    fn broken_pause() -> (WriteOp, oneshot::Receiver<Result<(), StoreError>>) {
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::Pause {
            host: Some("h:80".into()),
            pause: Some(PauseRecord {
                since: 1,
                reason: None,
            }),
            reply: tx,
        };
        (op, rx)
    }

    type IngestRx = oneshot::Receiver<Result<IngestResult, StoreError>>;

    fn keyed_ingest(key: u8, body_hash: u8) -> (WriteOp, IngestRx) {
        claimed_ingest(key, body_hash, None)
    }

    /// As `keyed_ingest`, with a legacy form of the claim.
    fn legacy_ingest(key: u8, body_hash: u8, legacy: (u8, u8)) -> (WriteOp, IngestRx) {
        claimed_ingest(key, body_hash, Some(legacy))
    }

    fn claimed_ingest(key: u8, body_hash: u8, legacy: Option<(u8, u8)>) -> (WriteOp, IngestRx) {
        let (tx, rx) = oneshot::channel();
        let w = IngestWrite {
            idem: Some(IdemClaim {
                key: [key; 32],
                body_hash: [body_hash; 32],
                expires_at: u64::MAX,
                legacy: legacy.map(|(k, h)| ([k; 32], [h; 32])),
            }),
            ..one_delivery()
        };
        (WriteOp::Ingest(w, tx), rx)
    }

    /// A request acked by the version before (its claim stored under the old key and hash) and
    /// retried after the upgrade is a duplicate; another request under that key is refused.
    #[test]
    fn a_claim_stored_by_the_version_before_still_matches_in_its_legacy_form() {
        let (_dir, _store, mut writer, _handle, _enqueued) =
            writer_with_a_broken_table("host_pauses");
        let (old, mut old_rx) = keyed_ingest(7, 1);
        writer.commit_batch(&mut vec![old]);
        let first = created(&mut old_rx);
        // A claim made after the upgrade is never matched in its legacy form: a PUT after a
        // POST of the same body under the same key is a different request.
        let (put, mut put_rx) = legacy_ingest(7, 6, (7, 1));
        writer.commit_batch(&mut vec![put]);
        assert!(matches!(
            put_rx.try_recv().unwrap(),
            Ok(IngestResult::KeyReused)
        ));
        // From here on, the claim above counts as one the version before made.
        writer.idem_legacy_before = u64::MAX;

        let (retry, mut retry_rx) = legacy_ingest(9, 5, (7, 1));
        writer.commit_batch(&mut vec![retry]);
        assert!(matches!(
            retry_rx.try_recv().unwrap(),
            Ok(IngestResult::Duplicate { ids, .. }) if ids == vec![first]
        ));
        let (other, mut other_rx) = legacy_ingest(9, 5, (7, 2));
        writer.commit_batch(&mut vec![other]);
        assert!(matches!(
            other_rx.try_recv().unwrap(),
            Ok(IngestResult::KeyReused)
        ));
        // With no legacy claim stored, the new claim is made as usual.
        let (fresh, mut fresh_rx) = legacy_ingest(10, 5, (11, 1));
        writer.commit_batch(&mut vec![fresh]);
        created(&mut fresh_rx);
        // Same key, the old hash stored (a PUT acked before the method counted): a duplicate.
        let (put, mut put_rx) = legacy_ingest(7, 6, (7, 1));
        writer.commit_batch(&mut vec![put]);
        assert!(matches!(
            put_rx.try_recv().unwrap(),
            Ok(IngestResult::Duplicate { ids, .. }) if ids == vec![first]
        ));
    }

    fn refused<T: std::fmt::Debug>(rx: &mut oneshot::Receiver<Result<T, StoreError>>) -> String {
        match rx.try_recv().expect("answered") {
            Err(StoreError::CommitFailed(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    fn created(rx: &mut IngestRx) -> Id {
        match rx.try_recv().expect("answered") {
            Ok(IngestResult::Created { ids, .. }) => ids[0],
            other => panic!("not created: {other:?}"),
        }
    }

    /// redb fails inside one op of a batch. That op is refused; nothing it may have written
    /// is committed, and the ops before and after it are committed in a second try without it.
    #[test]
    fn an_op_that_fails_in_the_store_is_refused_alone() {
        let (_dir, store, mut writer, handle, mut enqueued) =
            writer_with_a_broken_table("host_pauses");
        let (a, mut a_rx) = keyed_ingest(7, 1);
        let (p, mut p_rx) = broken_pause();
        let (b, mut b_rx) = keyed_ingest(8, 1);
        writer.commit_batch(&mut vec![a, p, b]);

        let why = refused(&mut p_rx);
        assert!(why.contains("failed in the store"), "{why}");
        let (a_id, b_id) = (created(&mut a_rx), created(&mut b_rx));
        assert!(a_id < b_id);
        assert_eq!(announced(&mut enqueued), vec![a_id, b_id]);
        assert!(handle.healthy());
        assert_eq!(store.counts().unwrap().get(Status::Pending), 2);
        assert_eq!(store.last_id().unwrap(), b_id);
        // Each claim is in the writer's index once: the first try's were put back.
        assert_eq!(writer.idem.candidates(&[7; 32]).count(), 1);
        assert_eq!(writer.idem.candidates(&[8; 32]).count(), 1);
        let (again, mut again_rx) = keyed_ingest(7, 1);
        writer.commit_batch(&mut vec![again]);
        assert!(matches!(
            again_rx.try_recv().unwrap(),
            Ok(IngestResult::Duplicate { ids, .. }) if ids == vec![a_id]
        ));
    }

    /// When op after op keeps failing, the batch stops trying after `MAX_OPS_REFUSED` of them
    /// and refuses the rest whole: nothing is committed, every caller gets the error (an op the
    /// last try never reached too), the claims leave the writer's index, and the next batch
    /// commits as usual.
    #[test]
    fn a_batch_whose_ops_keep_failing_is_refused_whole() {
        let (_dir, store, mut writer, handle, mut enqueued) =
            writer_with_a_broken_table("host_pauses");
        let (a, mut a_rx) = keyed_ingest(7, 1);
        let mut batch = vec![a];
        let mut pauses = Vec::new();
        for _ in 0..=MAX_OPS_REFUSED {
            let (p, rx) = broken_pause();
            batch.push(p);
            pauses.push(rx);
        }
        let (b, mut b_rx) = keyed_ingest(8, 1);
        batch.push(b);
        writer.commit_batch(&mut batch);

        let why = refused(&mut a_rx);
        assert!(
            why.contains("operations of the batch failed in the store"),
            "{why}"
        );
        assert_eq!(refused(&mut b_rx), why, "the op no try reached");
        for rx in &mut pauses {
            assert!(refused(rx).contains("failed in the store"));
        }
        assert!(!handle.healthy());
        assert!(announced(&mut enqueued).is_empty());
        assert_eq!(store.counts().unwrap().get(Status::Pending), 0);
        assert_eq!(store.last_id().unwrap(), Id(0), "no delivery row stored");
        assert_eq!(
            writer.idem.candidates(&[7; 32]).count(),
            0,
            "the claim left the writer's index with its batch"
        );

        // The refused claim is free: a different body under the same key is a new delivery.
        let (next, mut next_rx) = keyed_ingest(7, 2);
        writer.commit_batch(&mut vec![next]);
        created(&mut next_rx);
        assert!(handle.healthy());
        assert_eq!(store.counts().unwrap().get(Status::Pending), 1);
    }

    /// The failing op has already written rows when redb fails: a replay creates its delivery
    /// (record, payload, `due` and `by_status` rows, a pending count, an announcement) and then
    /// cannot open `batches`. None of that is committed or announced; the ingests around it are;
    /// and a lone op that fails commits nothing and leaves the store's health alone.
    #[test]
    fn a_failed_op_leaves_none_of_its_writes_behind() {
        let (_dir, store, mut writer, handle, mut enqueued) = writer_with_a_broken_table("batches");
        let (x, mut x_rx) = keyed_ingest(1, 1);
        writer.commit_batch(&mut vec![x]);
        let source = created(&mut x_rx);
        let (tx, mut cancel_rx) = oneshot::channel();
        writer.commit_batch(&mut vec![WriteOp::Cancel(source, tx)]);
        assert!(matches!(cancel_rx.try_recv(), Ok(Ok(_))));
        assert_eq!(announced(&mut enqueued), vec![source]);

        let replay = || {
            let (tx, rx) = oneshot::channel();
            let w = ReplayWrite {
                requested: vec![(DeliveryId(source).to_string(), Some(source))],
                filter: None,
                dry_run: false,
                reason: None,
            };
            (WriteOp::Replay(w, tx), rx)
        };
        let (a, mut a_rx) = keyed_ingest(7, 1);
        let (r, mut r_rx) = replay();
        let (b, mut b_rx) = keyed_ingest(8, 1);
        writer.commit_batch(&mut vec![a, r, b]);
        assert!(refused(&mut r_rx).contains("failed in the store"));
        let (a_id, b_id) = (created(&mut a_rx), created(&mut b_rx));
        assert_eq!(announced(&mut enqueued), vec![a_id, b_id]);
        let counts = store.counts().unwrap();
        assert_eq!(
            (counts.get(Status::Pending), counts.get(Status::Cancelled)),
            (2, 1)
        );
        let txn = store.db().begin_read().unwrap();
        assert_eq!(txn.open_table(DELIVERIES).unwrap().len().unwrap(), 3);
        assert_eq!(txn.open_table(PAYLOADS).unwrap().len().unwrap(), 3);
        assert_eq!(txn.open_table(DUE).unwrap().len().unwrap(), 2);
        assert_eq!(txn.open_table(BY_STATUS).unwrap().len().unwrap(), 3);
        drop(txn);

        // Alone, the failing op is refused without a commit; health is not touched.
        let commits = |w: &Writer| w.metrics.commit_batch_size.get_sample_count();
        let before = commits(&writer);
        let (r, mut r_rx) = replay();
        writer.commit_batch(&mut vec![r]);
        assert!(refused(&mut r_rx).contains("failed in the store"));
        assert_eq!(commits(&writer), before);
        assert!(handle.healthy());
    }

    fn sized_ingest(bytes: usize) -> (WriteOp, IngestRx) {
        let (tx, rx) = oneshot::channel();
        let mut w = one_delivery();
        w.deliveries[0].payload = vec![7; bytes];
        (WriteOp::Ingest(w, tx), rx)
    }

    type ReplayRx = oneshot::Receiver<Result<(Id, BatchRecord), StoreError>>;

    fn replay_of(ids: &[Id]) -> (WriteOp, ReplayRx) {
        let (tx, rx) = oneshot::channel();
        let w = ReplayWrite {
            requested: ids
                .iter()
                .map(|id| (DeliveryId(*id).to_string(), Some(*id)))
                .collect(),
            filter: None,
            dry_run: false,
            reason: None,
        };
        (WriteOp::Replay(w, tx), rx)
    }

    /// Free space above the reserve is handed to a batch's growing ops in turn: one batch of
    /// large bodies cannot run the disk out inside redb's commit (which would latch the store).
    /// An ingest that does not fit is refused and the small one after it still goes through; a
    /// replay whose copies do not fit is refused whole, before writing anything.
    #[test]
    fn a_batch_grows_the_store_only_into_the_room_above_the_reserve() {
        static FREE_ROOM: AtomicU64 = AtomicU64::new(u64::MAX);
        fn disk(_: &std::path::Path) -> Option<u64> {
            Some(FREE_ROOM.load(Ordering::SeqCst))
        }
        const MIB: usize = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tx, _enqueued) = mpsc::unbounded_channel();
        let (mut writer, _handle) = Writer::new(&store, Metrics::new(), tx, 0, disk).unwrap();
        // Room for one 1 MiB body (which may take twice that on disk), not for two.
        FREE_ROOM.store(
            super::super::space::DISK_RESERVE + 3 * MIB as u64,
            Ordering::SeqCst,
        );
        let (a, mut a_rx) = sized_ingest(MIB);
        let (b, mut b_rx) = sized_ingest(MIB);
        let (c, mut c_rx) = sized_ingest(100);
        writer.commit_batch(&mut vec![a, b, c]);
        let a_id = created(&mut a_rx);
        let why = refused(&mut b_rx);
        assert!(why.contains("no room on the disk for this write"), "{why}");
        assert!(
            writer.healthy.load(Ordering::Relaxed),
            "the store is ready: the rest fits"
        );
        let c_id = created(&mut c_rx);
        let (d, mut d_rx) = sized_ingest(MIB);
        writer.commit_batch(&mut vec![d]);
        let d_id = created(&mut d_rx);
        for id in [a_id, d_id] {
            let (tx, mut rx) = oneshot::channel();
            writer.commit_batch(&mut vec![WriteOp::Cancel(id, tx)]);
            assert!(matches!(rx.try_recv(), Ok(Ok(_))));
        }
        let (r, mut r_rx) = replay_of(&[a_id, d_id]);
        writer.commit_batch(&mut vec![r]);
        match r_rx.try_recv().expect("answered") {
            Err(StoreError::NoRoom { needed, .. }) if needed > 4 * MIB as u64 => {}
            other => panic!("two 1 MiB copies fit: {other:?}"),
        }
        let txn = store.db().begin_read().unwrap();
        assert_eq!(txn.open_table(PAYLOADS).unwrap().len().unwrap(), 3);
        assert_eq!(txn.open_table(BATCHES).unwrap().len().unwrap(), 0);
        drop(txn);
        let (r, mut r_rx) = replay_of(&[a_id]);
        writer.commit_batch(&mut vec![r]);
        assert!(matches!(r_rx.try_recv(), Ok(Ok(_))), "one copy fits");
        // With room to spare, both large ingests of one batch go through.
        FREE_ROOM.store(u64::MAX, Ordering::SeqCst);
        let (e, mut e_rx) = sized_ingest(MIB);
        let (f, mut f_rx) = sized_ingest(MIB);
        writer.commit_batch(&mut vec![e, f]);
        assert!(created(&mut e_rx) < created(&mut f_rx));
        assert_eq!(
            store.counts().unwrap().get(Status::Pending),
            4,
            "c, a's copy, e, f"
        );
        assert!(c_id > a_id);
    }

    /// Storage under redb that fails its writes on demand (a disk that filled up beyond what the
    /// space check foresaw, or an I/O error).
    #[derive(Debug)]
    struct FailingDisk {
        inner: redb::backends::InMemoryBackend,
        fail: Arc<AtomicBool>,
    }

    impl FailingDisk {
        fn check(&self) -> std::io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::ErrorKind::StorageFull.into());
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for FailingDisk {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.inner.write(offset, data)
        }
    }

    /// After a write fails inside redb, redb refuses every later one until the file is
    /// reopened: the writer says so (`latched`, which fails liveness), instead of staying
    /// alive and useless with only readiness off.
    #[test]
    fn a_store_that_redb_latched_is_reported_for_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let fail = Arc::new(AtomicBool::new(false));
        let backend = FailingDisk {
            inner: redb::backends::InMemoryBackend::new(),
            fail: fail.clone(),
        };
        let store = Store::open_with_backend(dir.path(), backend).unwrap();
        let (tx, _enqueued) = mpsc::unbounded_channel();
        let roomy = |_: &std::path::Path| Some(u64::MAX);
        let (mut writer, handle) = Writer::new(&store, Metrics::new(), tx, 0, roomy).unwrap();
        let (a, mut a_rx) = keyed_ingest(1, 1);
        writer.commit_batch(&mut vec![a]);
        created(&mut a_rx);
        assert!(!handle.latched());

        fail.store(true, Ordering::SeqCst);
        let (b, mut b_rx) = keyed_ingest(2, 1);
        writer.commit_batch(&mut vec![b]);
        refused(&mut b_rx);
        assert!(!handle.healthy());
        // The disk is back, but redb is not.
        fail.store(false, Ordering::SeqCst);
        let (c, mut c_rx) = keyed_ingest(3, 1);
        writer.commit_batch(&mut vec![c]);
        let why = refused(&mut c_rx);
        assert!(why.contains("Previous I/O error"), "{why}");
        assert!(handle.latched(), "reported for a restart");
        assert!(!handle.healthy());
    }
}
