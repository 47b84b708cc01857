//! The durable store: limit definitions and live leases in a redb database
//! under the data directory, with a change log in front of it (group
//! commit).
//!
//! The engine's journal hands every operation's changes to [`Store::record`]
//! under the engine's lock, which numbers them. The writer thread takes
//! everything recorded so far, appends it to the change log as one frame,
//! syncs it with one `fdatasync`, and publishes the highest number it made
//! durable. An answer that depends on a change waits for that number
//! ([`Store::durable`]) before it goes out. While one batch is being synced
//! the next accumulates, so throughput grows with load instead of collapsing
//! to one sync per grant.
//!
//! Why a log in front of redb: a redb commit rewrites about a dozen pages and
//! took 0.76 ms under load, an append and `fdatasync` of the log a fraction
//! of that. The log's changes are folded (the last change to a key wins) and
//! checkpointed into redb once the log passes [`CHECKPOINT_BYTES`], and at
//! every start. Every change is a whole record or a deletion by key, so
//! replaying a log over a database that already holds some of it gives the
//! same state: a crash between a checkpoint and the log's truncation is
//! harmless.
//!
//! Batches are made durable whole and in order, so whatever a durable grant
//! depended on (the release that made room for it) is durable too.
//!
//! **Opening fails closed.** The database records its format
//! ([`FORMAT`]) and the epoch the log is being written in, in the same
//! transaction as each checkpoint. A torn frame at the end of the log is
//! the only damage passed over (it was never acknowledged). Anything else
//! is refused with a message naming the file, the offset and what to do: a
//! damaged frame with acknowledged ones after it, a log missing or cut
//! short beside a database that expects it, a database missing beside a
//! log that holds changes, a database older than its log (it lost a
//! checkpoint), a format this version does not know, an unreadable record.
//! `ratekeeper store check` says what is wrong; `ratekeeper store recover
//! --accept-loss` keeps what can be read and says what is lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use ratekeeper_core::{Change, LeaseId, LeaseView, LimitRecord, Records};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::watch;

use crate::log::{Anchor, Log};

mod repair;
mod tables;
#[cfg(test)]
mod tests;
mod writer;

use repair::*;
pub use tables::FORMAT;
use tables::*;
use writer::*;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "ratekeeper.redb";
/// The change log's name inside the data directory.
pub const LOG_FILE: &str = "ratekeeper.log";
/// Past this size the change log is folded into the database and emptied.
pub const CHECKPOINT_BYTES: u64 = 4 << 20;
/// The database's page cache. The store reads the database only when it
/// opens (the engine holds the state), and a checkpoint rewrites what the
/// log changed since the last one: the cache holds the B-tree's inner
/// pages and a checkpoint's writes, not the data.
const DB_CACHE_BYTES: usize = 16 << 20;
/// The log file is zero-filled to this size up front, so that it rarely
/// grows (see the log module).
const LOG_PREALLOCATE: u64 = CHECKPOINT_BYTES + (1 << 20);

/// The durable store could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory or database file could not be opened or read.
    #[error("cannot open the store at {path}: {reason}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A stored record is unreadable or breaks the engine's rules, or a
    /// file of the store is damaged or missing.
    #[error(
        "the store at {path} is damaged: {reason}. Nothing was changed. \
         `ratekeeper store check` says what is wrong; restore the data directory \
         from a backup, or run `ratekeeper store recover --accept-loss` to keep \
         what can be read"
    )]
    Corrupt {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The store was written by a version of ratekeeper that this one
    /// cannot read.
    #[error(
        "the store at {path} has format {found}, written by a newer ratekeeper; \
         this one reads formats 1 to {FORMAT}. Run the newer version, or restore a backup"
    )]
    Format {
        /// The database file.
        path: PathBuf,
        /// The format it records.
        found: u32,
    },
}

/// How far the writer has got.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every batch numbered up to this one is durable.
    committed: u64,
    /// Set while the log cannot be written: why. Nothing recorded after
    /// `committed` is durable meanwhile.
    failed: Option<String>,
    /// Set while a checkpoint cannot be written (the log keeps the
    /// changes): why.
    checkpoint: Option<String>,
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
    /// The writer thread, which holds the files until it ends.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Store {
    /// Ends the writer (it finishes what was queued) and waits for it, so
    /// that the files are closed when the store is gone.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(
            self.queue.get_mut().unwrap_or_else(|p| p.into_inner()),
            closed,
        ));
        if let Some(writer) = self
            .writer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = writer.join();
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, checkpoints whatever its log
    /// holds, and reads the state. Starts the writer thread.
    pub fn open(dir: &Path) -> Result<(Arc<Store>, Records), StoreError> {
        Store::open_with(dir, CHECKPOINT_BYTES)
    }

    fn open_with(dir: &Path, checkpoint_bytes: u64) -> Result<(Arc<Store>, Records), StoreError> {
        let writer = Writer::open(dir, checkpoint_bytes, Repair::Refuse)?.0;
        Store::start(dir, writer)
    }
}

/// Opens the store in `dir` keeping whatever can be read, as `ratekeeper
/// store recover --accept-loss` does: damaged files are moved or copied
/// aside (`*.damaged-<unix seconds>`) and what was lost is described, one
/// line each. The store is sound afterwards.
pub fn recover(dir: &Path) -> Result<Vec<String>, StoreError> {
    let (writer, lost) = Writer::open(dir, CHECKPOINT_BYTES, Repair::AcceptLoss)?;
    drop(writer);
    Ok(lost)
}

/// What `ratekeeper store check` reports: what the store in `dir` holds,
/// or what is wrong with it. Reads a scratch copy, so not a byte of the
/// store changes.
pub fn check(dir: &Path) -> Result<Records, StoreError> {
    let copy = tempfile_dir(dir)?;
    for file in [DB_FILE, LOG_FILE] {
        if dir.join(file).exists() {
            std::fs::copy(dir.join(file), copy.join(file)).map_err(|e| StoreError::Open {
                path: dir.join(file),
                reason: e.to_string(),
            })?;
        }
    }
    let outcome = Writer::open(&copy, CHECKPOINT_BYTES, Repair::Refuse).and_then(|(writer, _)| {
        read_records(&writer.db).map_err(|reason| StoreError::Corrupt {
            path: dir.join(DB_FILE),
            reason,
        })
    });
    let _ = std::fs::remove_dir_all(&copy);
    outcome.map_err(|err| relocate(err, &copy, dir))
}

impl Store {
    fn start(dir: &Path, writer: Writer) -> Result<(Arc<Store>, Records), StoreError> {
        let path = dir.join(DB_FILE);
        let open_error = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        let records = read_records(&writer.db).map_err(|reason| StoreError::Corrupt {
            path: path.clone(),
            reason,
        })?;
        let (sender, receiver) = mpsc::channel();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let writer = std::thread::Builder::new()
            .name("ratekeeper-store".into())
            .spawn(move || writer.run(receiver, progress_tx))
            .map_err(|e| open_error(e.to_string()))?;
        let store = Store {
            recorded: AtomicU64::new(0),
            queue: Mutex::new(sender),
            progress,
            writer: Mutex::new(Some(writer)),
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

    /// Whether the store can write: why not, if it cannot.
    pub(crate) fn health(&self) -> Result<(), String> {
        let progress = self.progress.borrow();
        match (&progress.failed, &progress.checkpoint) {
            (Some(reason), _) => Err(reason.clone()),
            (None, Some(reason)) => Err(format!("a checkpoint cannot be written: {reason}")),
            (None, None) => Ok(()),
        }
    }

    /// Whether a change made now can be written: why not, if the change
    /// log cannot be written at the moment (a failed checkpoint does not
    /// count: the log still keeps every change).
    pub(crate) fn writable(&self) -> Result<(), String> {
        match &self.progress.borrow().failed {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    /// Waits until everything recorded so far is durable.
    pub(crate) async fn durable(&self) -> Result<(), String> {
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
