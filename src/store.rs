//! The durable store: the only module that names redb.
//!
//! It owns the table layout, the versioned record encoding, and the read side (snapshots that
//! never block the writer). Every write goes through the single writer thread in
//! [`writer`]; nothing else opens a write transaction.
//!
//! Key layout (ids are time-ordered, so inserts land at the end of each B-tree):
//! - `deliveries`  id -> DeliveryRecord (small, rewritten on each attempt)
//! - `payloads`    id -> Payload (headers and body; written once, never rewritten)
//! - `due`         (next_attempt_at, id) -> host, one entry per pending delivery
//! - `by_status`   (status, id) -> (), for listings without a scan
//! - `attempts`    (id, number) -> Attempt
//! - `finished`    (finished_at, id) -> (), for retention pruning
//! - `idem_keys`   (expires_at, sha256(scope, key)) -> IdemRecord; the writer finds a key's
//!   row through its in-memory index (`idem.rs`), so this table too is appended to at its end
//! - `batches`     batch id -> BatchRecord (replay audit trail, dry runs included), pruned
//!   `store.retention` after it was made (the id starts with its milliseconds)
//! - `host_pauses` host -> PauseRecord, one row per paused host
//! - `meta`        name -> bytes: `schema_version`, `counts` (deliveries per stored state, kept
//!   by the writer in the same transaction as every state change), `pause` (the global pause),
//!   `disabled_endpoints` (endpoints a 410 disabled)

pub mod idem;
pub mod query;
pub mod space;
pub mod writer;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::model::{Attempt, BatchRecord, DeliveryRecord, Id, PauseRecord, Payload, Status};

pub(crate) const DELIVERIES: TableDefinition<u128, &[u8]> = TableDefinition::new("deliveries");
pub(crate) const PAYLOADS: TableDefinition<u128, &[u8]> = TableDefinition::new("payloads");
pub(crate) const DUE: TableDefinition<(u64, u128), &str> = TableDefinition::new("due");
pub(crate) const BY_STATUS: TableDefinition<(u8, u128), ()> = TableDefinition::new("by_status");
pub(crate) const ATTEMPTS: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("attempts");
pub(crate) const FINISHED: TableDefinition<(u64, u128), ()> = TableDefinition::new("finished");
pub(crate) const IDEM_KEYS: TableDefinition<(u64, &[u8; 32]), &[u8]> =
    TableDefinition::new("idem_keys");
/// Schema 1 and 2 kept claims keyed by hash, with a separate expiry index; moved at open.
const LEGACY_IDEMPOTENCY: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("idempotency");
const LEGACY_IDEM_EXPIRY: TableDefinition<(u64, &[u8; 32]), ()> =
    TableDefinition::new("idem_expiry");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `meta` key: the named endpoints disabled by a 410, as a set of names.
pub(crate) const DISABLED_ENDPOINTS: &str = "disabled_endpoints";
pub(crate) const BATCHES: TableDefinition<u128, &[u8]> = TableDefinition::new("batches");
pub(crate) const HOST_PAUSES: TableDefinition<&str, &[u8]> = TableDefinition::new("host_pauses");

/// `meta` keys.
pub(crate) const META_COUNTS: &str = "counts";
pub(crate) const META_PAUSE: &str = "pause";
/// When this store was first opened by a version whose idempotency hash covers the method
/// (ms): claims made before it may be matched in their legacy form (`IdemClaim::legacy`).
pub(crate) const META_IDEM_METHOD_SINCE: &str = "idem_method_since";

/// Page cache for stores opened without a configured size (tests and tools).
const DEFAULT_CACHE_BYTES: usize = 32 << 20;

/// The layout version written into `meta`; a newer file is refused rather than misread.
/// 2 added `batches`, `host_pauses` and the `counts`/`pause` meta rows; 3 replaced
/// `idempotency` and `idem_expiry` with `idem_keys`. Older files are upgraded at open.
const SCHEMA_VERSION: u32 = 3;
/// The first byte of every encoded record.
const RECORD_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
    #[error("corrupt record in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("commit failed: {0}")]
    CommitFailed(String),
    #[error("the store writer has stopped")]
    WriterGone,
    #[error("the disk is nearly full ({free} bytes free); writes are refused until space returns")]
    DiskFull { free: u64 },
    #[error(
        "no room on the disk for this write: it may take up to {needed} bytes, and of the {free} bytes free 64 MiB are kept in reserve; it is refused until the disk has room"
    )]
    NoRoom { needed: u64, free: u64 },
    #[error("store at {path}: {reason}")]
    Open { path: String, reason: String },
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Storage(e.into())
            }
        }
    )*};
}
redb_errors!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

/// A stored idempotency claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub body_hash: [u8; 32],
    pub expires_at: u64,
    pub event_id: Option<Id>,
    pub deliveries: Vec<Id>,
}

/// Stored deliveries per state, indexed by `Status::code()` (`in_progress` is always 0 here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts(pub [u64; 5]);

impl Counts {
    pub fn get(&self, status: Status) -> u64 {
        self.0[status.code() as usize]
    }
}

/// A pending delivery as the scheduler needs it at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct DueEntry<'a> {
    pub next_at: u64,
    pub id: Id,
    pub host: &'a str,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Sized first, so a payload is written once into one allocation. postcard cannot fail on
    // these types except out of memory.
    let size = postcard::experimental::serialized_size(value).unwrap_or(0);
    let mut out = Vec::with_capacity(1 + size);
    out.push(RECORD_VERSION);
    postcard::to_extend(value, out).expect("record encoding")
}

pub fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt {
                table,
                reason: e.to_string(),
            })
        }
        Some((v, _)) => Err(StoreError::Corrupt {
            table,
            reason: format!("unknown record version {v}"),
        }),
        None => Err(StoreError::Corrupt {
            table,
            reason: "empty record".into(),
        }),
    }
}

/// Read access to the store. Cheap to clone; every read is a consistent snapshot.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    /// The database file, for its size (backpressure on `store.max_bytes`).
    path: Arc<std::path::PathBuf>,
}

impl Store {
    /// Opens (or creates) `dir/hookrelay.redb` and makes sure every table exists.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// As [`Store::open`], with `cache_bytes` of page cache (`store.cache_bytes`).
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let path = dir.join("hookrelay.redb");
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    open_err("already open by another hookrelay process".into())
                }
                e => open_err(e.to_string()),
            })?;
        Self::init(db, path, &open_err)
    }

    /// A store on `backend` instead of a file (`dir` only names it): for a test to fail the
    /// storage under redb.
    #[cfg(test)]
    pub(crate) fn open_with_backend(
        dir: &Path,
        backend: impl redb::StorageBackend,
    ) -> Result<Store, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dir.display().to_string(),
            reason,
        };
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| open_err(e.to_string()))?;
        Self::init(db, dir.join("hookrelay.redb"), &open_err)
    }

    /// Makes sure every table exists and the layout is this version's (upgrading older ones).
    fn init(
        db: Database,
        path: std::path::PathBuf,
        open_err: &dyn Fn(String) -> StoreError,
    ) -> Result<Store, StoreError> {
        let txn = db.begin_write()?;
        {
            txn.open_table(DELIVERIES)?;
            txn.open_table(PAYLOADS)?;
            txn.open_table(DUE)?;
            txn.open_table(BY_STATUS)?;
            txn.open_table(ATTEMPTS)?;
            txn.open_table(FINISHED)?;
            txn.open_table(IDEM_KEYS)?;
            txn.open_table(BATCHES)?;
            txn.open_table(HOST_PAUSES)?;
            let mut meta = txn.open_table(META)?;
            let existing = meta
                .get("schema_version")?
                .map(|v| decode::<u32>("meta", v.value()))
                .transpose()?;
            match existing {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(open_err(format!(
                        "written by a newer hookrelay (schema {v}, this build reads {SCHEMA_VERSION})"
                    )));
                }
                Some(v) if v == SCHEMA_VERSION => {}
                Some(2) => {
                    move_legacy_idempotency(&txn)?;
                    meta.insert("schema_version", encode(&SCHEMA_VERSION).as_slice())?;
                }
                // New file, or schema 1: the tables above now exist; counts are computed once.
                _ => {
                    move_legacy_idempotency(&txn)?;
                    let counts = count_index(&txn.open_table(BY_STATUS)?)?;
                    meta.insert(META_COUNTS, encode(&counts).as_slice())?;
                    meta.insert("schema_version", encode(&SCHEMA_VERSION).as_slice())?;
                }
            }
            if meta.get(META_IDEM_METHOD_SINCE)?.is_none() {
                meta.insert(
                    META_IDEM_METHOD_SINCE,
                    encode(&crate::clock::now_ms()).as_slice(),
                )?;
            }
        }
        txn.commit()?;
        Ok(Store {
            db: Arc::new(db),
            path: Arc::new(path),
        })
    }

    /// See [`META_IDEM_METHOD_SINCE`]; 0 if the store has no such mark.
    pub(crate) fn idem_method_since(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        meta.get(META_IDEM_METHOD_SINCE)?
            .map(|v| decode::<u64>("meta", v.value()))
            .transpose()
            .map(|v| v.unwrap_or(0))
    }

    pub(crate) fn db(&self) -> Arc<Database> {
        self.db.clone()
    }

    pub fn delivery(&self, id: Id) -> Result<Option<DeliveryRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DELIVERIES)?;
        let found = table.get(id.0)?;
        found.map(|v| decode("deliveries", v.value())).transpose()
    }

    /// The delivery and its payload from one snapshot.
    pub fn delivery_with_payload(
        &self,
        id: Id,
    ) -> Result<Option<(DeliveryRecord, Payload)>, StoreError> {
        let txn = self.db.begin_read()?;
        let deliveries = txn.open_table(DELIVERIES)?;
        let payloads = txn.open_table(PAYLOADS)?;
        let Some(record) = deliveries.get(id.0)? else {
            return Ok(None);
        };
        let record: DeliveryRecord = decode("deliveries", record.value())?;
        let Some(payload) = payloads.get(id.0)? else {
            return Err(StoreError::Corrupt {
                table: "payloads",
                reason: format!("no payload for delivery {}", id.0),
            });
        };
        Ok(Some((record, decode("payloads", payload.value())?)))
    }

    pub fn attempts(&self, id: Id) -> Result<Vec<Attempt>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ATTEMPTS)?;
        let mut out = Vec::new();
        for row in table.range((id.0, 0)..=(id.0, u32::MAX))? {
            let (_, v) = row?;
            out.push(decode("attempts", v.value())?);
        }
        Ok(out)
    }

    /// Calls `f` for every pending delivery, in due order: what the scheduler loads at start.
    /// Streams the table rather than collecting it, so a large backlog costs no extra memory.
    pub fn for_each_due(&self, mut f: impl FnMut(DueEntry)) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DUE)?;
        let mut n = 0;
        for row in table.iter()? {
            let (k, v) = row?;
            let (next_at, id) = k.value();
            f(DueEntry {
                next_at,
                id: Id(id),
                host: v.value(),
            });
            n += 1;
        }
        Ok(n)
    }

    /// The named endpoints a 410 disabled and no operator enabled since.
    pub fn disabled_endpoints(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        let found = table.get(DISABLED_ENDPOINTS)?;
        Ok(found
            .map(|v| decode("meta", v.value()))
            .transpose()?
            .unwrap_or_default())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the database file takes on disk.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&*self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// The largest delivery or batch id stored, so the writer's ids continue after it.
    pub fn last_id(&self) -> Result<Id, StoreError> {
        let txn = self.db.begin_read()?;
        let mut last = 0u128;
        let deliveries = txn.open_table(DELIVERIES)?;
        if let Some((k, _)) = deliveries.last()? {
            last = last.max(k.value());
        }
        let batches = txn.open_table(BATCHES)?;
        if let Some((k, _)) = batches.last()? {
            last = last.max(k.value());
        }
        Ok(Id(last))
    }

    /// The writer's index of stored idempotency claims, rebuilt from the keys of `idem_keys`.
    pub(crate) fn idem_index(&self) -> Result<idem::IdemIndex, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(IDEM_KEYS)?;
        let mut index = idem::IdemIndex::default();
        for row in table.iter()? {
            let (k, _) = row?;
            let (at, hash) = k.value();
            index.insert(hash, at);
        }
        Ok(index)
    }

    /// The oldest pending delivery (ids are creation-ordered).
    pub fn oldest_pending(&self) -> Result<Option<Id>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BY_STATUS)?;
        let code = Status::Pending.code();
        let first = table.range((code, 0)..=(code, u128::MAX))?.next();
        match first {
            Some(row) => Ok(Some(Id(row?.0.value().1))),
            None => Ok(None),
        }
    }

    /// How many deliveries are stored in each state, from the counters the writer keeps.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let found = meta.get(META_COUNTS)?;
        found
            .map(|v| decode("meta", v.value()))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// The global pause, if delivery is paused.
    pub fn pause(&self) -> Result<Option<PauseRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let found = meta.get(META_PAUSE)?;
        found.map(|v| decode("meta", v.value())).transpose()
    }

    /// Every paused host with its pause.
    pub fn host_pauses(&self) -> Result<Vec<(String, PauseRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HOST_PAUSES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), decode("host_pauses", v.value())?));
        }
        Ok(out)
    }

    pub fn batch(&self, id: Id) -> Result<Option<BatchRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BATCHES)?;
        let found = table.get(id.0)?;
        found.map(|v| decode("batches", v.value())).transpose()
    }

    /// Batches newest first, strictly older than `before` when given.
    pub fn batches(
        &self,
        before: Option<Id>,
        limit: usize,
    ) -> Result<Vec<(Id, BatchRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BATCHES)?;
        let upper = before.map_or(u128::MAX, |b| b.0.saturating_sub(1));
        let mut out = Vec::new();
        for row in table.range(..=upper)?.rev().take(limit) {
            let (k, v) = row?;
            out.push((Id(k.value()), decode("batches", v.value())?));
        }
        Ok(out)
    }
}

/// Moves the claims of a schema 1 or 2 file (hash -> claim, plus an expiry index) into
/// `idem_keys` and drops the old tables (a new file has none: they are created empty and dropped).
fn move_legacy_idempotency(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    {
        let old = txn.open_table(LEGACY_IDEMPOTENCY)?;
        let expiry = txn.open_table(LEGACY_IDEM_EXPIRY)?;
        let mut keys = txn.open_table(IDEM_KEYS)?;
        for row in expiry.iter()? {
            let (k, _) = row?;
            let (at, hash) = k.value();
            if let Some(claim) = old.get(hash)? {
                keys.insert((at, hash), claim.value())?;
            }
        }
    }
    txn.delete_table(LEGACY_IDEMPOTENCY)?;
    txn.delete_table(LEGACY_IDEM_EXPIRY)?;
    Ok(())
}

/// Counts the `by_status` index: used once, when a store is created or upgraded.
fn count_index(table: &impl ReadableTable<(u8, u128), ()>) -> Result<Counts, StoreError> {
    let mut counts = Counts::default();
    for row in table.iter()? {
        let (k, _) = row?;
        let code = k.value().0 as usize;
        if code < counts.0.len() {
            counts.0[code] += 1;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_their_version() {
        let p = Payload {
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: b"{}".to_vec(),
        };
        let bytes = encode(&p);
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(decode::<Payload>("payloads", &bytes).unwrap(), p);
        let mut wrong = bytes.clone();
        wrong[0] = 99;
        assert!(matches!(
            decode::<Payload>("payloads", &wrong),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(decode::<Payload>("payloads", &[]).is_err());
    }

    #[test]
    fn payload_body_bytes_encode_like_the_plain_sequence() {
        // Files written before `serde_bytes` used the sequence form; both must be identical.
        #[derive(Serialize)]
        struct Plain {
            headers: Vec<(String, Vec<u8>)>,
            body: Vec<u8>,
        }
        let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let headers = vec![("x".to_string(), b"y".to_vec())];
        let fast = Payload {
            headers: headers.clone(),
            body: body.clone(),
        };
        assert_eq!(encode(&fast), encode(&Plain { headers, body }));
    }

    #[test]
    fn reopening_keeps_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.for_each_due(|_| {}).unwrap(), 0);
    }

    #[test]
    fn a_schema_2_store_keeps_its_idempotency_claims_on_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let claim = IdemRecord {
            body_hash: [7; 32],
            expires_at: 5_000,
            event_id: None,
            deliveries: vec![Id(42)],
        };
        let hash = [9u8; 32];
        // Make it look like a schema 2 file: claims keyed by hash plus an expiry index.
        let txn = store.db.begin_write().unwrap();
        {
            txn.delete_table(IDEM_KEYS).unwrap();
            let mut old = txn.open_table(LEGACY_IDEMPOTENCY).unwrap();
            old.insert(&hash, encode(&claim).as_slice()).unwrap();
            let mut expiry = txn.open_table(LEGACY_IDEM_EXPIRY).unwrap();
            expiry.insert((5_000, &hash), ()).unwrap();
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("schema_version", encode(&2u32).as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let index = store.idem_index().unwrap();
        assert_eq!(index.candidates(&hash).collect::<Vec<_>>(), vec![5_000]);
        let txn = store.db.begin_read().unwrap();
        let keys = txn.open_table(IDEM_KEYS).unwrap();
        let moved = keys.get((5_000, &hash)).unwrap().unwrap();
        assert_eq!(
            decode::<IdemRecord>("idem_keys", moved.value()).unwrap(),
            claim
        );
        let tables: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| redb::TableHandle::name(&t).to_string())
            .collect();
        assert!(!tables.contains(&"idempotency".to_string()), "{tables:?}");
        assert!(!tables.contains(&"idem_expiry".to_string()), "{tables:?}");
    }

    #[test]
    fn a_schema_1_store_gets_its_counts_from_the_index_on_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.counts().unwrap(), Counts::default());
        // Make it look like a schema 1 file holding two pending and one failed delivery.
        let txn = store.db.begin_write().unwrap();
        {
            let mut index = txn.open_table(BY_STATUS).unwrap();
            index.insert((Status::Pending.code(), 1), ()).unwrap();
            index.insert((Status::Pending.code(), 2), ()).unwrap();
            index.insert((Status::Failed.code(), 3), ()).unwrap();
            let mut meta = txn.open_table(META).unwrap();
            meta.remove(META_COUNTS).unwrap();
            meta.insert("schema_version", encode(&1u32).as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let counts = store.counts().unwrap();
        assert_eq!(
            (counts.get(Status::Pending), counts.get(Status::Failed)),
            (2, 1)
        );
    }
}
