//! Damage found while opening: refused, or passed over and described
//! (`ratekeeper store recover --accept-loss`).

use super::*;

/// Whether opening refuses damage or passes over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Repair {
    Refuse,
    AcceptLoss,
}

/// What opening found wrong, as it goes.
pub(super) struct Findings {
    pub(super) repair: Repair,
    /// What was passed over, described.
    pub(super) lost: Vec<String>,
}

impl Findings {
    /// Damage in `path`: refused, or passed over and described.
    pub(super) fn fault(&mut self, path: &Path, reason: String) -> Result<(), StoreError> {
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
pub(super) struct Meta {
    pub(super) format: Option<u32>,
    /// The epoch the log is written in.
    pub(super) epoch: Option<u32>,
    /// The size the log file was made with.
    pub(super) log_size: Option<u64>,
}

pub(super) fn read_meta(db: &Database) -> Result<Meta, String> {
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
pub(super) fn drop_unreadable(db: &Database) -> Result<Vec<String>, String> {
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

pub(super) fn aside_name(path: &Path) -> PathBuf {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{seconds}"));
    PathBuf::from(name)
}

/// Moves a damaged file out of the way; where it went.
pub(super) fn move_aside(path: &Path) -> Result<PathBuf, String> {
    let aside = aside_name(path);
    std::fs::rename(path, &aside).map_err(|e| e.to_string())?;
    Ok(aside)
}

/// Copies a damaged file for the record; where the copy is.
pub(super) fn copy_aside(path: &Path) -> Result<PathBuf, String> {
    let aside = aside_name(path);
    std::fs::copy(path, &aside).map_err(|e| e.to_string())?;
    Ok(aside)
}

/// A fresh directory beside `dir` for a copy of the store.
pub(super) fn tempfile_dir(dir: &Path) -> Result<PathBuf, StoreError> {
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
pub(super) fn relocate(err: StoreError, from: &Path, to: &Path) -> StoreError {
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
