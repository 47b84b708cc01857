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
        pause: None,
        max_instances: None,
        instance_of: None,
        adaptive: None,
        scale: None,
    })
}

#[test]
fn a_limit_stored_before_pauses_existed_reads_back_unpaused() {
    let stored = r#"{"name":"db","slots":3,"slot_decay_per_second":0.0,"active":true,
        "description":null,"drained_at":0,"counters":{"granted_total":1,
        "granted_slots_total":1,"waited_total":0,"expired_total":0,"denied_total":0},
        "created_at":0,"updated_at":0}"#;
    let record: LimitRecord = serde_json::from_str(stored).unwrap();
    assert_eq!((record.slots, record.pause), (3, None));
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
async fn a_damaged_frame_with_acknowledged_ones_after_it_is_refused_naming_the_file_and_offset() {
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

// The lock stands for a writer busy with its frame: held on purpose while
// the waiters come.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_recorded_while_a_frame_is_written_share_the_next_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    // A writer is busy: whoever waits now follows it.
    let busy = store.shared.writer.lock().unwrap();
    let waiters: Vec<_> = (0..10)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store.record(vec![limit(&format!("l{i}"), 1)]);
                store.durable().await
            })
        })
        .collect();
    while store.shared.recorded.load(Ordering::Acquire) < 10 {
        tokio::task::yield_now().await;
    }
    // The busy writer finishes without writing anything, as a writer whose
    // frame missed these changes would.
    drop(busy);
    store.shared.progress.send_modify(|_| {});
    for waiter in waiters {
        waiter.await.unwrap().unwrap();
    }
    let (records, batches) = reopen_copy(dir.path());
    assert_eq!(records.limits.len(), 10);
    assert_eq!(
        batches, 1,
        "one frame carries every change queued meanwhile"
    );
}

#[tokio::test]
async fn changes_nobody_waits_for_are_written_by_the_store_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    // Its background thread waits for work before any is queued.
    while !store.shared.lock_queue().idle {
        tokio::task::yield_now().await;
    }
    store.record(vec![limit("released", 1)]);
    let mut progress = store.shared.progress.subscribe();
    tokio::time::timeout(
        Duration::from_secs(10),
        progress.wait_for(|p| p.committed >= 1),
    )
    .await
    .expect("the change was never written")
    .unwrap();
    let (records, _) = reopen_copy(dir.path());
    assert_eq!(names(&records), [("released", 1)]);
}

#[tokio::test]
async fn a_frame_keeps_only_the_last_change_to_each_record() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    // Taken in one frame, as a busy writer would leave them queued.
    let busy = store.shared.writer.lock().unwrap();
    for slots in 1..=100 {
        store.record(vec![limit("a", slots), limit("b", 1)]);
    }
    store.record(vec![Change::LimitDeleted("b".into())]);
    store.shared.write(busy);
    store.durable().await.unwrap();
    let bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    let frames = crate::log::read(&bytes, Anchor::FirstFrame).batches;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].len(), 2, "{:?}", frames[0]);
    drop(store);
    let (_, records) = Store::open(dir.path()).unwrap();
    assert_eq!(names(&records), [("a", 100)]);
}
