//! The durable file: limit definitions and live leases in a redb database,
//! written by one thread in batches (group commit).
//!
//! The engine's journal hands every operation's changes to [`Store::record`]
//! under the engine's lock, which numbers them. The writer thread takes
//! everything recorded so far, folds it into one transaction (the last
//! change to a key wins), commits it with an fsync, and publishes the
//! highest number it made durable. An answer that depends on a change waits
//! for that number ([`Store::durable`]) before it goes out. While one commit
//! is being synced the next batch accumulates, so throughput grows with load
//! instead of collapsing to one fsync per grant.
//!
//! Batches are committed whole and in order, so whatever a committed grant
//! depended on (the release that made room for it) is committed too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use ratekeeper_core::{Change, LeaseId, LeaseRecord, LimitRecord, Records};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::watch;

/// Limit records as JSON, by name.
const LIMITS: TableDefinition<&str, &[u8]> = TableDefinition::new("limits");
/// Lease records as JSON, by the lease id's 16 bytes.
const LEASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("leases");

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "ratekeeper.redb";

/// The durable store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory or database file could not be opened or read.
    #[error("cannot open the store at {path}: {reason}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A stored record is unreadable or breaks the engine's rules.
    #[error("the store at {path} holds an invalid record: {reason}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// How far the writer has got.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every batch numbered up to this one is durable.
    committed: u64,
    /// Set once a commit failed; nothing is durable after that.
    failed: Option<String>,
}

/// The durable store of one server.
pub struct Store {
    /// The number of the last batch recorded. Only increased under the
    /// engine's lock, so batches are numbered in the order they happened.
    recorded: AtomicU64,
    /// Batches not yet taken by the writer. Behind a mutex because the
    /// journal that feeds it must be `Send`, and `mpsc::Sender` is not `Sync`.
    queue: Mutex<mpsc::Sender<(u64, Vec<Change>)>>,
    progress: watch::Receiver<Progress>,
}

impl Store {
    /// Opens (or creates) the database in `dir` and reads what it holds.
    /// Starts the writer thread.
    pub fn open(dir: &Path) -> Result<(Arc<Store>, Records), StoreError> {
        let path = dir.join(DB_FILE);
        let open_error = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| open_error(e.to_string()))?;
        let records = read_records(&db).map_err(|reason| StoreError::Corrupt {
            path: path.clone(),
            reason,
        })?;
        let (sender, receiver) = mpsc::channel();
        let (progress_tx, progress) = watch::channel(Progress::default());
        std::thread::Builder::new()
            .name("ratekeeper-store".into())
            .spawn(move || write_batches(db, receiver, progress_tx))
            .map_err(|e| open_error(e.to_string()))?;
        let store = Store {
            recorded: AtomicU64::new(0),
            queue: Mutex::new(sender),
            progress,
        };
        Ok((Arc::new(store), records))
    }

    /// Queues one operation's changes for the writer. Call it under the
    /// engine's lock (the driver's journal does).
    pub fn record(&self, changes: Vec<Change>) {
        let seq = self.recorded.fetch_add(1, Ordering::SeqCst) + 1;
        // A send fails only when the writer is gone, which it is only after
        // a failed commit; `durable` reports that failure.
        let _ = self
            .queue
            .lock()
            .expect("the store queue lock is never poisoned")
            .send((seq, changes));
    }

    /// Waits until everything recorded so far is durable.
    pub async fn durable(&self) -> Result<(), String> {
        let target = self.recorded.load(Ordering::SeqCst);
        let mut progress = self.progress.clone();
        let progress = progress
            .wait_for(|p| p.committed >= target || p.failed.is_some())
            .await
            .map_err(|_| "the store writer stopped".to_owned())?;
        match &progress.failed {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }
}

fn read_records(db: &Database) -> Result<Records, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let mut records = Records::default();
    match txn.open_table(LIMITS) {
        Ok(table) => {
            for entry in table.iter().map_err(|e| e.to_string())? {
                let (name, value) = entry.map_err(|e| e.to_string())?;
                let record: LimitRecord = serde_json::from_slice(value.value())
                    .map_err(|e| format!("limit {:?}: {e}", name.value()))?;
                records.limits.push(record);
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    match txn.open_table(LEASES) {
        Ok(table) => {
            for entry in table.iter().map_err(|e| e.to_string())? {
                let (_, value) = entry.map_err(|e| e.to_string())?;
                let record: LeaseRecord =
                    serde_json::from_slice(value.value()).map_err(|e| format!("lease: {e}"))?;
                records.leases.push(record);
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(records)
}

/// The changes of several batches folded together: the last change to a key
/// wins, `None` meaning deleted.
#[derive(Default)]
struct Fold {
    limits: HashMap<String, Option<LimitRecord>>,
    leases: HashMap<LeaseId, Option<LeaseRecord>>,
}

impl Fold {
    fn add(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Limit(record) => {
                    self.limits.insert(record.name.clone(), Some(record));
                }
                Change::LimitDeleted(name) => {
                    self.limits.insert(name, None);
                }
                Change::Lease(record) => {
                    self.leases.insert(record.id, Some(record));
                }
                Change::LeaseDeleted(id) => {
                    self.leases.insert(id, None);
                }
            }
        }
    }

    fn write(self, db: &Database) -> Result<(), String> {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut limits = txn.open_table(LIMITS).map_err(|e| e.to_string())?;
            for (name, record) in self.limits {
                match record {
                    Some(record) => limits.insert(name.as_str(), json(&record).as_slice()),
                    None => limits.remove(name.as_str()),
                }
                .map_err(|e| e.to_string())?;
            }
            let mut leases = txn.open_table(LEASES).map_err(|e| e.to_string())?;
            for (id, record) in self.leases {
                let key = id.to_bytes();
                match record {
                    Some(record) => leases.insert(key.as_slice(), json(&record).as_slice()),
                    None => leases.remove(key.as_slice()),
                }
                .map_err(|e| e.to_string())?;
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialize")
}

/// The writer thread: commits everything queued, one transaction at a time.
fn write_batches(
    db: Database,
    queue: mpsc::Receiver<(u64, Vec<Change>)>,
    progress: watch::Sender<Progress>,
) {
    while let Ok((mut last, changes)) = queue.recv() {
        let mut fold = Fold::default();
        fold.add(changes);
        while let Ok((seq, changes)) = queue.try_recv() {
            fold.add(changes);
            last = seq;
        }
        if let Err(reason) = fold.write(&db) {
            tracing::error!(%reason, "writing the store failed; refusing further changes");
            progress
                .send_modify(|p| p.failed = Some(format!("the store cannot be written: {reason}")));
            return;
        }
        progress.send_modify(|p| p.committed = last);
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("recorded", &self.recorded)
            .field("committed", &self.progress.borrow().committed)
            .finish()
    }
}
