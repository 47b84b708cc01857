//! The change-log reader on any bytes: a log damaged in any way is read
//! without a panic, and what it reports is consistent with the bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ratekeeper_backend::log::{Anchor, read};

fuzz_target!(|data: &[u8]| {
    // The first four bytes choose the anchored epoch; the rest is the file.
    let (anchor, bytes) = match data.split_first_chunk::<4>() {
        Some((epoch, rest)) if epoch[0] & 1 == 1 => (Anchor::Epoch(u32::from_le_bytes(*epoch)), rest),
        Some((_, rest)) => (Anchor::FirstFrame, rest),
        None => (Anchor::FirstFrame, data),
    };
    let replay = read(bytes, anchor);
    assert!(replay.len <= bytes.len() as u64, "replayed past the end");
    assert!(replay.newest_epoch >= replay.epoch);
    if let Anchor::Epoch(epoch) = anchor {
        assert!(replay.batches.is_empty() || replay.epoch == epoch, "replayed another epoch");
    }
    if let Some(damage) = &replay.damage {
        assert_eq!(damage.offset, replay.len, "damage is reported where reading stopped");
    }
});
