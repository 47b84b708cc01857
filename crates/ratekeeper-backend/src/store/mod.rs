//! The durable store: limit definitions and live leases in a redb database
//! under the data directory, with a change log in front of it (group
//! commit).
//!
//! The engine's journal hands every operation's changes to [`Store::record`]
//! under the engine's lock, which numbers them and queues them. An answer
//! that depends on a change waits for that number ([`Store::durable`])
//! before it goes out, and writes it itself if nobody is writing (leader and
//! followers): the first waiter to find the log free takes everything queued
//! so far, appends it as one frame, syncs it with one `fdatasync`, and
//! publishes the highest number it made durable; those who came while it
//! wrote wait for that, and the first of them whose change missed the frame
//! writes the next one. There is no hand-off to another thread on the way:
//! a grant is synced by the task that answers it, and while one frame is
//! being synced the next accumulates, so throughput grows with load instead
//! of collapsing to one sync per grant.
//!
//! A frame keeps only the last change to each record of what it takes
//! (replaying it gives the same state): under churn, one limit's record
//! would otherwise be repeated for every grant and release it carries.
//!
//! Changes nobody waits for (a release, an expiry) are written by the next
//! frame, or, when no request comes, by a background thread within
//! [`LINGER`]; it also retries a frame that could not be written. (A
//! release that let a waiter in waits like a grant: the embedded backend
//! writes the waiter's frame from the release, which is running already.)
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
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
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
/// How long changes nobody waits for may stay queued before the background
/// thread writes them.
const LINGER: Duration = Duration::from_millis(2);

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

/// How far the writers have got.
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
    shared: Arc<Shared>,
    /// The background thread, which writes what nobody waits for.
    background: Option<std::thread::JoinHandle<()>>,
}

/// What the store's callers and its background thread share.
struct Shared {
    /// The number of the last batch recorded. Only increased under the
    /// engine's lock (and the queue's), so batches are numbered in the order
    /// they happened.
    recorded: AtomicU64,
    queue: Mutex<Queue>,
    /// Wakes the background thread: something was queued, or the store
    /// is closing.
    wake: Condvar,
    /// The files. Whoever holds this lock is the one writer (the leader).
    writer: Mutex<Writer>,
    progress: watch::Sender<Progress>,
}

/// Changes recorded and not yet taken by a writer.
#[derive(Default)]
struct Queue {
    changes: Vec<Change>,
    /// How many times a writer took the queue: the background thread leaves
    /// the writing to requests while this moves.
    taken: u64,
    /// The background thread waits for something to be queued.
    idle: bool,
    closing: bool,
}

impl Drop for Store {
    /// Ends the background thread (it writes what was queued) and waits for
    /// it, so that the files are closed when the store is gone.
    fn drop(&mut self) {
        self.shared.lock_queue().closing = true;
        self.shared.wake.notify_one();
        if let Some(background) = self.background.take() {
            let _ = background.join();
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, checkpoints whatever its log
    /// holds, and reads the state. Starts the background thread.
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
        let records = read_records(&writer.db).map_err(|reason| StoreError::Corrupt {
            path: path.clone(),
            reason,
        })?;
        let shared = Arc::new(Shared {
            recorded: AtomicU64::new(0),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            writer: Mutex::new(writer),
            progress: watch::Sender::new(Progress::default()),
        });
        let background = Arc::clone(&shared);
        let background = std::thread::Builder::new()
            .name("ratekeeper-store".into())
            .spawn(move || background.background())
            .map_err(|e| StoreError::Open {
                path,
                reason: e.to_string(),
            })?;
        let store = Store {
            shared,
            background: Some(background),
        };
        Ok((Arc::new(store), records))
    }

    /// Queues one operation's changes. Call it under the engine's lock (the
    /// driver's journal does).
    pub fn record(&self, mut changes: Vec<Change>) {
        let shared = &self.shared;
        let mut queue = shared.lock_queue();
        shared.recorded.fetch_add(1, Ordering::Release);
        if queue.changes.is_empty() {
            std::mem::swap(&mut queue.changes, &mut changes);
            shared.nudge(&mut queue);
        } else {
            queue.changes.append(&mut changes);
        }
    }

    /// Whether the store can write: why not, if it cannot.
    pub(crate) fn health(&self) -> Result<(), String> {
        let progress = self.shared.progress.borrow();
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
        match &self.shared.progress.borrow().failed {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    /// Waits until everything recorded so far is durable, writing it if
    /// nobody else is. Unless it is durable already, it first lets the
    /// tasks ready on this thread record their changes, so that under load
    /// one frame carries more of them.
    pub(crate) async fn durable(&self) -> Result<(), String> {
        let shared = &self.shared;
        let target = shared.recorded.load(Ordering::Acquire);
        // Subscribed before looking, so that a frame written after the look
        // wakes this waiter.
        let mut progress = shared.progress.subscribe();
        let mut gather = true;
        loop {
            {
                let now = progress.borrow_and_update();
                if let Some(reason) = &now.failed {
                    return Err(reason.clone());
                }
                if now.committed >= target {
                    return Ok(());
                }
            }
            if gather {
                gather = false;
                tokio::task::yield_now().await;
                continue;
            }
            let wrote = match shared.writer.try_lock() {
                Ok(writer) => {
                    shared.write(writer);
                    true
                }
                Err(TryLockError::WouldBlock) => false,
                Err(TryLockError::Poisoned(_)) => {
                    return Err("the store writer failed and stopped".to_owned());
                }
            };
            if !wrote {
                // Another writer holds the log: its frame may carry ours.
                progress
                    .changed()
                    .await
                    .map_err(|_| "the store writer stopped".to_owned())?;
            }
        }
    }
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the background thread if it waits for something queued.
    fn nudge(&self, queue: &mut Queue) {
        if queue.idle {
            queue.idle = false;
            self.wake.notify_one();
        }
    }

    /// Writes everything queued as one frame, as the writer `writer` is
    /// the lock of, then publishes how far the log is durable. The lock is
    /// let go before publishing, so that whoever is woken can write next.
    ///
    /// A frame that cannot be written (a full disk, say) is not given up:
    /// its changes go back to the head of the queue and are tried again with
    /// the next frame, and the store reports itself failed until then
    /// (waiters get the reason, `health` says it). A checkpoint that cannot
    /// be written is tried again at the next frame: its changes are safe in
    /// the log.
    fn write(&self, mut writer: MutexGuard<'_, Writer>) {
        let (batch, last) = {
            let mut queue = self.lock_queue();
            queue.taken += 1;
            (
                std::mem::take(&mut queue.changes),
                self.recorded.load(Ordering::Acquire),
            )
        };
        let mut batch = Fold::last_of_each(batch);
        if batch.is_empty() {
            drop(writer);
            // Whoever waits for a frame that was written meanwhile looks again.
            self.progress.send_modify(|_| {});
            return;
        }
        match writer.log.append(&batch) {
            Ok(()) => {
                writer.pending.add(batch);
                let checkpoint = if writer.log.len() >= writer.checkpoint_bytes {
                    blocking(|| writer.checkpoint())
                } else {
                    Ok(())
                };
                drop(writer);
                self.progress.send_modify(|p| {
                    p.committed = last;
                    p.failed = None;
                    p.checkpoint = checkpoint.err();
                });
            }
            Err(err) => {
                {
                    let mut queue = self.lock_queue();
                    batch.append(&mut queue.changes);
                    queue.changes = batch;
                    // The background thread tries again, even if nothing
                    // more is recorded (nothing can be, while this fails).
                    self.nudge(&mut queue);
                }
                drop(writer);
                let reason = format!("the change log cannot be written: {err}");
                if self.progress.borrow().failed.as_deref() != Some(reason.as_str()) {
                    tracing::error!(%reason, "changes are refused until it can be");
                }
                self.progress.send_modify(|p| p.failed = Some(reason));
            }
        }
    }

    /// The background thread: writes changes nobody waits for once they
    /// have lingered, retries a frame that failed, and writes what is left
    /// when the store closes.
    fn background(&self) {
        let mut retry = Duration::from_millis(50);
        loop {
            let (closing, taken) = {
                let mut queue = self.lock_queue();
                while queue.changes.is_empty() && !queue.closing {
                    queue.idle = true;
                    queue = self.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
                }
                queue.idle = false;
                (queue.closing, queue.taken)
            };
            if !closing {
                if self.progress.borrow().failed.is_some() {
                    std::thread::sleep(retry);
                    retry = (retry * 2).min(Duration::from_secs(1));
                } else {
                    retry = Duration::from_millis(50);
                    std::thread::sleep(LINGER);
                    if self.lock_queue().taken != taken {
                        // Requests are writing: the next frame takes these.
                        continue;
                    }
                }
            }
            self.write(self.writer.lock().unwrap_or_else(|p| p.into_inner()));
            if closing {
                if !self.lock_queue().changes.is_empty() {
                    tracing::error!("the store is closing and its last changes cannot be written");
                }
                return;
            }
        }
    }
}

/// Runs `work`, which blocks for a while (a checkpoint), telling a
/// multi-threaded runtime first, so that the tasks queued on this thread
/// move to another meanwhile.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
