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

/// The store's own facts: its format, and the log's epoch.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The store format this version writes: 2 since the database anchors the
/// log's epoch (0.1.0 wrote format 1, without a `meta` table).
pub const FORMAT: u32 = 2;

/// Limit records as JSON, by name.
const LIMITS: TableDefinition<&str, &[u8]> = TableDefinition::new("limits");
/// Lease records as JSON, by the lease id's 16 bytes.
const LEASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("leases");

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "ratekeeper.redb";
/// The change log's name inside the data directory.
pub const LOG_FILE: &str = "ratekeeper.log";
/// Past this size the change log is folded into the database and emptied.
pub const CHECKPOINT_BYTES: u64 = 4 << 20;
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
    pub fn health(&self) -> Result<(), String> {
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
    pub fn writable(&self) -> Result<(), String> {
        match &self.progress.borrow().failed {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
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
                let record: LeaseView =
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
    leases: HashMap<LeaseId, Option<LeaseView>>,
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

    /// Writes the folded changes, and that the log (of `log_size` bytes)
    /// is now written in `epoch`, in one transaction.
    fn write(self, db: &Database, epoch: u32, log_size: u64) -> Result<(), String> {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
            meta.insert("format", FORMAT.to_le_bytes().as_slice())
                .map_err(|e| e.to_string())?;
            meta.insert("log_epoch", epoch.to_le_bytes().as_slice())
                .map_err(|e| e.to_string())?;
            meta.insert("log_size", log_size.to_le_bytes().as_slice())
                .map_err(|e| e.to_string())?;
        }
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

/// The writer thread's state.
struct Writer {
    db: Database,
    log: Log,
    /// Every change in the log, folded: what the next checkpoint writes.
    pending: Fold,
    checkpoint_bytes: u64,
    /// The size the log file is made with (and must keep).
    log_size: u64,
}

impl Writer {
    /// Makes everything queued durable, one log frame at a time.
    ///
    /// A frame that cannot be written (a full disk, say) is not given up:
    /// it is tried again, with what was queued meanwhile, until it can be,
    /// and the store reports itself failed until then (waiters get the
    /// reason, `health` says it). A checkpoint that cannot be written is
    /// tried again at the next frame: its changes are safe in the log.
    fn run(mut self, queue: mpsc::Receiver<(u64, Vec<Change>)>, progress: watch::Sender<Progress>) {
        let mut retry = Duration::from_millis(50);
        while let Ok((mut last, mut batch)) = queue.recv() {
            loop {
                let mut closing = false;
                loop {
                    match queue.try_recv() {
                        Ok((seq, changes)) => {
                            batch.extend(changes);
                            last = seq;
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            closing = true;
                            break;
                        }
                    }
                }
                match self.log.append(&batch) {
                    Ok(()) => break,
                    Err(err) if closing => {
                        tracing::error!(%err, "the store is closing and its last changes cannot be written");
                        return;
                    }
                    Err(err) => {
                        let reason = format!("the change log cannot be written: {err}");
                        if progress.borrow().failed.as_deref() != Some(reason.as_str()) {
                            tracing::error!(%reason, "changes are refused until it can be");
                        }
                        progress.send_modify(|p| p.failed = Some(reason));
                        std::thread::sleep(retry);
                        retry = (retry * 2).min(Duration::from_secs(1));
                    }
                }
            }
            retry = Duration::from_millis(50);
            self.pending.add(batch);
            let checkpoint = if self.log.len() >= self.checkpoint_bytes {
                self.checkpoint()
            } else {
                Ok(())
            };
            progress.send_modify(|p| {
                p.committed = last;
                p.failed = None;
                p.checkpoint = checkpoint.err();
            });
        }
    }

    /// Writes the log's changes into the database, then empties the log.
    fn checkpoint(&mut self) -> Result<(), String> {
        self.checkpoint_to(self.log.epoch().wrapping_add(1))
    }

    /// Writes the log's changes into the database with `epoch` as the
    /// log's new epoch, then starts the log afresh in it.
    fn checkpoint_to(&mut self, epoch: u32) -> Result<(), String> {
        std::mem::take(&mut self.pending).write(&self.db, epoch, self.log_size)?;
        self.log.start(epoch);
        Ok(())
    }

    /// Opens the store's files, checks them (see the module) and
    /// checkpoints the log. With [`Repair::AcceptLoss`], what cannot be
    /// kept is moved aside or dropped, and described.
    fn open(
        dir: &Path,
        checkpoint_bytes: u64,
        repair: Repair,
    ) -> Result<(Writer, Vec<String>), StoreError> {
        let db_path = dir.join(DB_FILE);
        let log_path = dir.join(LOG_FILE);
        let open_error = |path: &Path, reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
        };
        let mut findings = Findings {
            repair,
            lost: Vec::new(),
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(dir, e.to_string()))?;
        let preallocate = LOG_PREALLOCATE.min(checkpoint_bytes);
        let log_bytes = match std::fs::read(&log_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(open_error(&log_path, e.to_string())),
        };
        let log_written = log_bytes
            .as_ref()
            .is_some_and(|b| b.iter().any(|&x| x != 0));
        if !db_path.exists() && log_written {
            findings.fault(
                &db_path,
                "the database is missing, yet the change log beside it holds changes \
                 (starting afresh would forget every limit and lease)"
                    .into(),
            )?;
        }
        let db = match Database::create(&db_path) {
            Ok(db) => db,
            Err(e) if repair == Repair::AcceptLoss => {
                let aside = move_aside(&db_path).map_err(|e| open_error(&db_path, e))?;
                findings.fault(
                    &db_path,
                    format!(
                        "the database could not be opened ({e}); moved to {}",
                        aside.display()
                    ),
                )?;
                Database::create(&db_path).map_err(|e| open_error(&db_path, e.to_string()))?
            }
            Err(e) => return Err(open_error(&db_path, e.to_string())),
        };
        let Meta {
            format,
            epoch,
            log_size,
        } = read_meta(&db).map_err(|reason| StoreError::Corrupt {
            path: db_path.clone(),
            reason,
        })?;
        if let Some(found) = format.filter(|f| *f > FORMAT) {
            return Err(StoreError::Format {
                path: db_path,
                found,
            });
        }
        let anchored = format == Some(FORMAT);
        if anchored {
            match &log_bytes {
                None => findings.fault(
                    &log_path,
                    "the change log is missing beside a database that expects it \
                     (the changes since the last checkpoint would be lost)"
                        .into(),
                )?,
                Some(bytes) if (bytes.len() as u64) < log_size.unwrap_or(0) => findings.fault(
                    &log_path,
                    format!(
                        "the change log is {} bytes, shorter than the {} it was made with: \
                         it was cut short",
                        bytes.len(),
                        log_size.unwrap_or(0)
                    ),
                )?,
                Some(_) => {}
            }
        }
        let anchor = if anchored {
            Anchor::Epoch(epoch.unwrap_or(0))
        } else {
            Anchor::FirstFrame
        };
        let (log, replay) = Log::open(&log_path, preallocate, anchor)
            .map_err(|e| open_error(&log_path, e.to_string()))?;
        if let Some(damage) = &replay.damage {
            if repair == Repair::AcceptLoss {
                let aside = copy_aside(&log_path).map_err(|e| open_error(&log_path, e))?;
                findings.lost.push(format!(
                    "(the damaged change log was copied to {})",
                    aside.display()
                ));
            }
            findings.fault(
                &log_path,
                format!(
                    "at offset {}: {}; the changes from there on",
                    damage.offset, damage.what
                ),
            )?;
        }
        if anchored && epoch.is_some_and(|e| replay.newest_epoch > e) {
            findings.fault(
                &db_path,
                format!(
                    "the database is older than its change log (the log holds epoch {}, the database \
                     names {}): it lost a checkpoint, so changes it held are gone",
                    replay.newest_epoch,
                    epoch.unwrap_or(0)
                ),
            )?;
        }
        let next = replay.newest_epoch.max(epoch.unwrap_or(0)).wrapping_add(1);
        let mut writer = Writer {
            db,
            log,
            pending: Fold::default(),
            checkpoint_bytes,
            log_size: preallocate.max(log_bytes.as_ref().map_or(0, |b| b.len() as u64)),
        };
        replay
            .batches
            .into_iter()
            .for_each(|batch| writer.pending.add(batch));
        writer
            .checkpoint_to(next)
            .map_err(|reason| StoreError::Corrupt {
                path: db_path.clone(),
                reason,
            })?;
        if repair == Repair::AcceptLoss {
            for skipped in drop_unreadable(&writer.db).map_err(|reason| StoreError::Corrupt {
                path: db_path.clone(),
                reason,
            })? {
                findings
                    .lost
                    .push(format!("{}: {skipped}", db_path.display()));
            }
        }
        Ok((writer, findings.lost))
    }
}

/// Whether opening refuses damage or passes over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repair {
    Refuse,
    AcceptLoss,
}

/// What opening found wrong, as it goes.
struct Findings {
    repair: Repair,
    /// What was passed over, described.
    lost: Vec<String>,
}

impl Findings {
    /// Damage in `path`: refused, or passed over and described.
    fn fault(&mut self, path: &Path, reason: String) -> Result<(), StoreError> {
        match self.repair {
            Repair::Refuse => Err(StoreError::Corrupt {
                path: path.to_owned(),
                reason,
            }),
            Repair::AcceptLoss => {
                self.lost.push(format!("{}: {reason}", path.display()));
                Ok(())
            }
        }
    }
}

/// What a database records about the store (all `None` in 0.1.0's
/// format 1, which had no `meta` table).
#[derive(Debug, Default)]
struct Meta {
    format: Option<u32>,
    /// The epoch the log is written in.
    epoch: Option<u32>,
    /// The size the log file was made with.
    log_size: Option<u64>,
}

fn read_meta(db: &Database) -> Result<Meta, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let table = match txn.open_table(META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Meta::default()),
        Err(e) => return Err(e.to_string()),
    };
    let bytes = |key: &str| -> Result<Option<Vec<u8>>, String> {
        Ok(table
            .get(key)
            .map_err(|e| e.to_string())?
            .map(|v| v.value().to_vec()))
    };
    let bad = |key: &str| format!("the stored {key} is not a number");
    let u32_of = |key: &str| -> Result<Option<u32>, String> {
        bytes(key)?
            .map(|b| b.try_into().map(u32::from_le_bytes).map_err(|_| bad(key)))
            .transpose()
    };
    let log_size = bytes("log_size")?
        .map(|b| {
            b.try_into()
                .map(u64::from_le_bytes)
                .map_err(|_| bad("log_size"))
        })
        .transpose()?;
    Ok(Meta {
        format: u32_of("format")?,
        epoch: u32_of("log_epoch")?,
        log_size,
    })
}

/// Deletes records that cannot be read; says which.
fn drop_unreadable(db: &Database) -> Result<Vec<String>, String> {
    let mut bad_limits = Vec::new();
    let mut bad_leases = Vec::new();
    {
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let limits = txn.open_table(LIMITS).map_err(|e| e.to_string())?;
        for entry in limits.iter().map_err(|e| e.to_string())? {
            let (name, value) = entry.map_err(|e| e.to_string())?;
            if serde_json::from_slice::<LimitRecord>(value.value()).is_err() {
                bad_limits.push(name.value().to_owned());
            }
        }
        let leases = txn.open_table(LEASES).map_err(|e| e.to_string())?;
        for entry in leases.iter().map_err(|e| e.to_string())? {
            let (key, value) = entry.map_err(|e| e.to_string())?;
            if serde_json::from_slice::<LeaseView>(value.value()).is_err() {
                bad_leases.push(key.value().to_vec());
            }
        }
    }
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut limits = txn.open_table(LIMITS).map_err(|e| e.to_string())?;
        for name in &bad_limits {
            limits.remove(name.as_str()).map_err(|e| e.to_string())?;
        }
        let mut leases = txn.open_table(LEASES).map_err(|e| e.to_string())?;
        for key in &bad_leases {
            leases.remove(key.as_slice()).map_err(|e| e.to_string())?;
        }
    }
    txn.commit().map_err(|e| e.to_string())?;
    let mut described: Vec<String> = bad_limits
        .iter()
        .map(|name| format!("the unreadable record of limit {name:?} was dropped"))
        .collect();
    described.extend(bad_leases.iter().map(|key| {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        format!("the unreadable record of lease {hex} was dropped (its slots are free)")
    }));
    Ok(described)
}

fn aside_name(path: &Path) -> PathBuf {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{seconds}"));
    PathBuf::from(name)
}

/// Moves a damaged file out of the way; where it went.
fn move_aside(path: &Path) -> Result<PathBuf, String> {
    let aside = aside_name(path);
    std::fs::rename(path, &aside).map_err(|e| e.to_string())?;
    Ok(aside)
}

/// Copies a damaged file for the record; where the copy is.
fn copy_aside(path: &Path) -> Result<PathBuf, String> {
    let aside = aside_name(path);
    std::fs::copy(path, &aside).map_err(|e| e.to_string())?;
    Ok(aside)
}

/// A fresh directory beside `dir` for a copy of the store.
fn tempfile_dir(dir: &Path) -> Result<PathBuf, StoreError> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let copy =
        std::env::temp_dir().join(format!("ratekeeper-check-{}-{seconds}", std::process::id()));
    std::fs::create_dir_all(&copy).map_err(|e| StoreError::Open {
        path: dir.to_owned(),
        reason: format!("cannot make a scratch copy in {}: {e}", copy.display()),
    })?;
    Ok(copy)
}

/// An error about the scratch copy `from`, told about `to` instead.
fn relocate(err: StoreError, from: &Path, to: &Path) -> StoreError {
    let fix = |path: PathBuf| match path.strip_prefix(from) {
        Ok(rest) => to.join(rest),
        Err(_) => path,
    };
    let text =
        |reason: String| reason.replace(&from.display().to_string(), &to.display().to_string());
    match err {
        StoreError::Open { path, reason } => StoreError::Open {
            path: fix(path),
            reason: text(reason),
        },
        StoreError::Corrupt { path, reason } => StoreError::Corrupt {
            path: fix(path),
            reason: text(reason),
        },
        StoreError::Format { path, found } => StoreError::Format {
            path: fix(path),
            found,
        },
    }
}

#[cfg(test)]
mod tests {
    use ratekeeper_core::{Counters, Timestamp};

    use super::*;

    fn limit(name: &str, slots: u64) -> Change {
        Change::Limit(LimitRecord {
            name: name.into(),
            slots,
            slot_decay_per_second: 0.0,
            active: true,
            description: None,
            drained_at: Timestamp::EPOCH,
            counters: Counters::default(),
            created_at: Timestamp::EPOCH,
            updated_at: Timestamp::EPOCH,
        })
    }

    /// The files as a crash would leave them, opened again.
    /// Also says how many batches the log held.
    fn reopen_copy(dir: &Path) -> (Records, usize) {
        let copy = tempfile::tempdir().unwrap();
        for file in [DB_FILE, LOG_FILE] {
            std::fs::copy(dir.join(file), copy.path().join(file)).unwrap();
        }
        let db = Database::create(copy.path().join(DB_FILE)).unwrap();
        let epoch = read_meta(&db).unwrap().epoch;
        drop(db);
        let bytes = std::fs::read(copy.path().join(LOG_FILE)).unwrap();
        let batches = crate::log::read(&bytes, Anchor::Epoch(epoch.unwrap())).batches;
        let (_, records) = Store::open(copy.path()).unwrap();
        (records, batches.len())
    }

    fn names(records: &Records) -> Vec<(&str, u64)> {
        records
            .limits
            .iter()
            .map(|l| (l.name.as_str(), l.slots))
            .collect()
    }

    #[tokio::test]
    async fn changes_in_the_log_are_replayed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        store.record(vec![limit("a", 1), limit("b", 2)]);
        store.record(vec![limit("a", 3), Change::LimitDeleted("b".into())]);
        store.durable().await.unwrap();
        let (records, batches) = reopen_copy(dir.path());
        assert!(
            batches >= 1,
            "below the threshold the changes are only in the log"
        );
        assert_eq!(names(&records), [("a", 3)]);
    }

    /// Opens the store in `dir`, records `changes` durably and closes it.
    async fn lifetime(dir: &Path, changes: Vec<Change>) -> Records {
        let (store, records) = Store::open(dir).unwrap();
        store.record(changes);
        store.durable().await.unwrap();
        records
    }

    fn slots_of(records: &Records, name: &str) -> Option<u64> {
        records
            .limits
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.slots)
    }

    #[tokio::test]
    async fn a_torn_first_frame_never_brings_back_an_earlier_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        lifetime(dir.path(), vec![limit("x", 10)]).await;
        lifetime(dir.path(), vec![limit("x", 1)]).await;
        lifetime(dir.path(), vec![limit("y", 5)]).await;
        // What a power loss can leave: the first frame's first 22 bytes
        // overwritten with a piece of another frame.
        let log = dir.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&log).unwrap();
        let piece: Vec<u8> = bytes[40..62].to_vec();
        bytes[..22].copy_from_slice(&piece);
        std::fs::write(&log, bytes).unwrap();
        let records = lifetime(dir.path(), vec![limit("z", 2)]).await;
        assert_eq!(slots_of(&records, "x"), Some(1));
        let (_, records) = Store::open(dir.path()).unwrap();
        assert_eq!(
            slots_of(&records, "x"),
            Some(1),
            "an old lifetime's frame was replayed"
        );
        assert_eq!(slots_of(&records, "z"), Some(2));
    }

    fn refused(dir: &Path) -> String {
        match Store::open(dir) {
            Ok(_) => panic!("a damaged store was opened"),
            Err(err) => err.to_string(),
        }
    }

    #[tokio::test]
    async fn a_damaged_frame_with_acknowledged_ones_after_it_is_refused_naming_the_file_and_offset()
    {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        for i in 0..3 {
            store.record(vec![limit(&format!("l{i}"), 1)]);
            store.durable().await.unwrap();
        }
        drop(store);
        let log = dir.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&log).unwrap();
        bytes[30] ^= 0x04; // inside the first frame's payload
        std::fs::write(&log, &bytes).unwrap();
        let message = refused(dir.path());
        assert!(
            message.contains(LOG_FILE) && message.contains("offset 0"),
            "{message}"
        );
        assert!(message.contains("store recover --accept-loss"), "{message}");
        // Refusing changed nothing.
        assert_eq!(std::fs::read(&log).unwrap(), bytes);
        // Recovery keeps what is before the damage and says what is lost.
        let lost = recover(dir.path()).unwrap();
        assert!(lost.iter().any(|l| l.contains("offset 0")), "{lost:?}");
        let (_, records) = Store::open(dir.path()).unwrap();
        assert!(records.limits.is_empty());
    }

    #[tokio::test]
    async fn a_missing_or_cut_log_and_a_missing_database_are_refused() {
        for damage in ["log deleted", "log truncated", "database deleted"] {
            let dir = tempfile::tempdir().unwrap();
            lifetime(dir.path(), vec![limit("x", 1)]).await;
            let (log, db) = (dir.path().join(LOG_FILE), dir.path().join(DB_FILE));
            match damage {
                "log deleted" => std::fs::remove_file(&log).unwrap(),
                "log truncated" => std::fs::File::options()
                    .write(true)
                    .open(&log)
                    .unwrap()
                    .set_len(100)
                    .unwrap(),
                _ => std::fs::remove_file(&db).unwrap(),
            }
            let message = refused(dir.path());
            assert!(message.contains("damaged"), "{damage}: {message}");
            let lost = recover(dir.path()).unwrap();
            assert!(!lost.is_empty(), "{damage}: recovery said nothing was lost");
            Store::open(dir.path()).unwrap();
        }
    }

    #[tokio::test]
    async fn a_store_of_a_newer_format_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        lifetime(dir.path(), vec![limit("x", 1)]).await;
        let db = Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format", (FORMAT + 1).to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let message = refused(dir.path());
        assert!(
            message.contains(&format!("format {}", FORMAT + 1)),
            "{message}"
        );
    }

    #[tokio::test]
    async fn checkpoints_move_the_log_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open_with(dir.path(), 1).unwrap();
        store.record(vec![limit("a", 1), limit("b", 2)]);
        store.durable().await.unwrap();
        store.record(vec![Change::LimitDeleted("a".into())]);
        store.durable().await.unwrap();
        let (records, batches) = reopen_copy(dir.path());
        // The last checkpoint's frame is still in the file; replaying it
        // again changes nothing.
        assert!(batches <= 1);
        assert_eq!(names(&records), [("b", 2)]);
    }
}
