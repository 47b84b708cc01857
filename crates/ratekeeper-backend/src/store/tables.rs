//! The database's tables and how a batch of changes is folded into them.

use super::*;

/// The store's own facts: its format, and the log's epoch.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The store format this version writes: 2 since the database anchors the
/// log's epoch (0.1.0 wrote format 1, without a `meta` table).
pub const FORMAT: u32 = 2;

/// Limit records as JSON, by name.
pub(super) const LIMITS: TableDefinition<&str, &[u8]> = TableDefinition::new("limits");
/// Lease records as JSON, by the lease id's 16 bytes.
pub(super) const LEASES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("leases");

pub(super) fn read_records(db: &Database) -> Result<Records, String> {
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
pub(super) struct Fold {
    pub(super) limits: HashMap<String, Option<LimitRecord>>,
    pub(super) leases: HashMap<LeaseId, Option<LeaseView>>,
}

impl Fold {
    pub(super) fn add(&mut self, changes: Vec<Change>) {
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

    /// `changes` with only the last change to each key kept: what a frame
    /// holds. Replaying it gives the same state as replaying them all,
    /// since each change is a whole record or a deletion by key; under
    /// churn a frame otherwise repeats the same limit's record once per
    /// grant and release it carries.
    pub(super) fn last_of_each(changes: Vec<Change>) -> Vec<Change> {
        if changes.len() < 2 {
            return changes;
        }
        let mut fold = Fold::default();
        fold.add(changes);
        let limits = fold.limits.into_iter().map(|(name, record)| match record {
            Some(record) => Change::Limit(record),
            None => Change::LimitDeleted(name),
        });
        let leases = fold.leases.into_iter().map(|(id, record)| match record {
            Some(record) => Change::Lease(record),
            None => Change::LeaseDeleted(id),
        });
        limits.chain(leases).collect()
    }

    /// Writes the folded changes, and that the log (of `log_size` bytes)
    /// is now written in `epoch`, in one transaction.
    pub(super) fn write(self, db: &Database, epoch: u32, log_size: u64) -> Result<(), String> {
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

pub(super) fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialize")
}
