//! The writer: the store's files, which append each batch to the change
//! log, sync it, and checkpoint the log into the database.

use super::*;

/// Opens (or makes) the database with a page cache of [`DB_CACHE_BYTES`]:
/// redb's default of 1 GiB would keep every page a restore or checkpoint
/// touched for the life of the server.
fn open_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(DB_CACHE_BYTES)
        .create(path)
}

/// The store's files and what the next checkpoint writes.
pub(super) struct Writer {
    pub(super) db: Database,
    pub(super) log: Log,
    /// Every change in the log, folded: what the next checkpoint writes.
    pub(super) pending: Fold,
    pub(super) checkpoint_bytes: u64,
    /// The size the log file is made with (and must keep).
    pub(super) log_size: u64,
}

impl Writer {
    /// Writes the log's changes into the database, then empties the log.
    pub(super) fn checkpoint(&mut self) -> Result<(), String> {
        self.checkpoint_to(self.log.epoch().wrapping_add(1))
    }

    /// Writes the log's changes into the database with `epoch` as the
    /// log's new epoch, then starts the log afresh in it.
    pub(super) fn checkpoint_to(&mut self, epoch: u32) -> Result<(), String> {
        std::mem::take(&mut self.pending).write(&self.db, epoch, self.log_size)?;
        self.log.start(epoch);
        Ok(())
    }

    /// Opens the store's files, checks them (see the module) and
    /// checkpoints the log. With [`Repair::AcceptLoss`], what cannot be
    /// kept is moved aside or dropped, and described.
    pub(super) fn open(
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
        let db = match open_database(&db_path) {
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
                open_database(&db_path).map_err(|e| open_error(&db_path, e.to_string()))?
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
