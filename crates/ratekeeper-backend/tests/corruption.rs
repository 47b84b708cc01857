//! Damage of every kind to a store's files, each applied to a fresh copy:
//! every variant either leaves the acknowledged state whole (harmless) or
//! is refused with a message naming the damaged file. None may open with a
//! different state: that would be silent loss, or over-admission.

use std::path::Path;

use ratekeeper_backend::{Backend, DB_FILE, Embedded, LOG_FILE, repair};
use ratekeeper_core::{LimitSpec, Records};

use ratekeeper_backend::conformance::lease_on;

/// A store whose state lives partly in the database (checkpointed at the
/// second start) and partly in the change log.
async fn make_store(dir: &Path) -> Records {
    {
        let backend = Embedded::open(dir).unwrap();
        for name in ["a", "b", "c"] {
            backend
                .create_limit(LimitSpec::concurrency(name, 2))
                .await
                .unwrap();
        }
        let lease = |name| {
            let mut spec = lease_on(&[name], 1);
            spec.lease_ttl = std::time::Duration::from_secs(86_400);
            spec
        };
        backend.acquire(lease("a")).await.unwrap();
        backend.acquire(lease("b")).await.unwrap();
        backend.flush().await.unwrap();
    }
    {
        // The second start checkpoints the above into the database.
        let backend = Embedded::open(dir).unwrap();
        backend
            .create_limit(LimitSpec::rate("d", 5.0, 3))
            .await
            .unwrap();
        let mut spec = lease_on(&["c"], 2);
        spec.lease_ttl = std::time::Duration::from_secs(86_400);
        backend.acquire(spec).await.unwrap();
        backend.flush().await.unwrap();
    }
    repair::check(dir).unwrap()
}

/// Limits with their slots, and leases with their limits and occupancy.
type Summary = (Vec<(String, u64)>, Vec<(Vec<String>, u64)>);

/// The state as a comparable summary.
fn summary(records: &Records) -> Summary {
    let mut limits: Vec<_> = records
        .limits
        .iter()
        .map(|l| (l.name.clone(), l.slots))
        .collect();
    limits.sort();
    let mut leases: Vec<_> = records
        .leases
        .iter()
        .map(|l| (l.limits.clone(), l.occupy))
        .collect();
    leases.sort();
    (limits, leases)
}

type Damage = Box<dyn Fn(&Path)>;

fn flip(file: &'static str, offset: usize, mask: u8) -> Damage {
    Box::new(move |dir: &Path| {
        let path = dir.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = offset.min(bytes.len() - 1);
        bytes[at] ^= mask;
        std::fs::write(&path, bytes).unwrap();
    })
}

fn truncate(file: &'static str, len: u64) -> Damage {
    Box::new(move |dir: &Path| {
        std::fs::File::options()
            .write(true)
            .open(dir.join(file))
            .unwrap()
            .set_len(len)
            .unwrap();
    })
}

fn delete(file: &'static str) -> Damage {
    Box::new(move |dir: &Path| std::fs::remove_file(dir.join(file)).unwrap())
}

fn overwrite(file: &'static str, offset: usize, with: &'static [u8]) -> Damage {
    Box::new(move |dir: &Path| {
        let path = dir.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset..offset + with.len()].copy_from_slice(with);
        std::fs::write(&path, bytes).unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_damage_is_harmless_or_refused_never_silently_read() {
    let original = tempfile::tempdir().unwrap();
    let expected = summary(&make_store(original.path()).await);
    let db_len = std::fs::metadata(original.path().join(DB_FILE))
        .unwrap()
        .len() as usize;
    let mut variants: Vec<(String, Damage)> = vec![
        ("log deleted".into(), delete(LOG_FILE)),
        ("database deleted".into(), delete(DB_FILE)),
        ("log truncated to nothing".into(), truncate(LOG_FILE, 0)),
        ("log truncated to 100 bytes".into(), truncate(LOG_FILE, 100)),
        ("log cut to half".into(), truncate(LOG_FILE, 2 << 20)),
        (
            "database truncated to half".into(),
            truncate(DB_FILE, (db_len / 2) as u64),
        ),
        (
            "database truncated to 4 KiB".into(),
            truncate(DB_FILE, 4096),
        ),
        (
            "log's first header zeroed".into(),
            overwrite(LOG_FILE, 0, &[0; 12]),
        ),
        (
            "log's first bytes garbage".into(),
            overwrite(LOG_FILE, 0, b"garbage-bytes-here-22!"),
        ),
    ];
    for offset in [0, 3, 5, 9, 13, 40, 120, 400] {
        variants.push((
            format!("log bit flipped at {offset}"),
            flip(LOG_FILE, offset, 0x08),
        ));
    }
    for offset in (0..db_len).step_by(db_len / 24 + 1) {
        variants.push((
            format!("database byte changed at {offset}"),
            flip(DB_FILE, offset, 0xff),
        ));
    }
    let (mut harmless, mut refused) = (0, 0);
    for (name, damage) in &variants {
        let copy = tempfile::tempdir().unwrap();
        for file in [DB_FILE, LOG_FILE] {
            std::fs::copy(original.path().join(file), copy.path().join(file)).unwrap();
        }
        damage(copy.path());
        match repair::check(copy.path()) {
            Ok(records) => {
                assert_eq!(
                    summary(&records),
                    expected,
                    "{name}: opened with a different state"
                );
                harmless += 1;
            }
            Err(err) => {
                let message = err.to_string();
                assert!(
                    message.contains(DB_FILE) || message.contains(LOG_FILE),
                    "{name}: the refusal names no file: {message}"
                );
                refused += 1;
            }
        }
    }
    eprintln!(
        "{} damage variants: {harmless} harmless, {refused} refused",
        variants.len()
    );
    assert!(variants.len() >= 20);
}
