//! Upgrades keep data: a data directory written by 0.1.0 under way (see
//! fixtures/README.md) opens with everything in it, and is then written in
//! the current format.

use std::path::Path;
use std::process::Command;

use ratekeeper_backend::{Embedded, repair};

fn unpack(fixture: &str, into: &Path) {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_store_written_by_0_1_0_opens_with_every_limit_lease_and_decaying_slot() {
    let dir = tempfile::tempdir().unwrap();
    unpack("store-0.1.0.tar.gz", dir.path());
    for opening in ["first, from format 1", "again, in the current format"] {
        let records = repair::check(dir.path()).unwrap_or_else(|e| panic!("{opening}: {e}"));
        let mut limits: Vec<_> = records
            .limits
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.slots,
                    l.slot_decay_per_second,
                    l.active,
                    l.description.as_deref(),
                )
            })
            .collect();
        limits.sort_by_key(|l| l.0);
        assert_eq!(
            limits,
            [
                ("db", 3, 0.0, true, Some("database pool")),
                ("inactive", 1, 0.0, false, None),
                ("vendor-api", 10, 0.001, true, None),
            ],
            "{opening}"
        );
        let vendor = records
            .limits
            .iter()
            .find(|l| l.name == "vendor-api")
            .unwrap();
        // Four admissions at 0.001/s: 4 000 s of decay from their grant.
        assert!(
            vendor.drained_at > vendor.created_at,
            "{opening}: the decaying slots are gone"
        );
        assert_eq!(vendor.counters.granted_total, 4, "{opening}");
        let mut holders: Vec<_> = records
            .leases
            .iter()
            .map(|l| l.holder.clone().unwrap())
            .collect();
        holders.sort();
        assert_eq!(holders, ["fixture-1", "fixture-2"], "{opening}");
        assert!(
            records.leases.iter().all(|l| l.limits == ["db"]),
            "{opening}"
        );
        // Opening the store writes it in the current format (the engine is
        // left out here: it would expire the leases once their 24 h pass).
        assert_eq!(
            repair::recover(dir.path()).unwrap(),
            Vec::<String>::new(),
            "{opening}"
        );
    }
    // And the server's backend opens it.
    drop(Embedded::open(dir.path()).unwrap());
}
