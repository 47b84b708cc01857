//! The change log: batches of changes written one after another into a
//! preallocated file, each made durable with a single `fdatasync`.
//!
//! A frame is `[payload length: u32][epoch: u32][CRC-32 of epoch and
//! payload: u32][payload]` (little-endian), the payload being one batch of
//! changes as JSON. The file is filled with zeros up front and reused from
//! the start after every checkpoint, because syncing writes into blocks that
//! already exist is cheaper than syncing a file that grows (ext4 must commit
//! its journal for the new size).
//!
//! **Epochs.** Every reuse of the file writes a new epoch, and the epoch
//! being written is anchored in the database by the checkpoint that
//! started it (see the store). Reading replays, from offset 0, the frames of
//! the anchored epoch only, so frames left over from earlier lifetimes are
//! never read as new ones, whatever happened to the first frame. A new
//! epoch is above every epoch found anywhere in the file.
//!
//! **Damage.** Reading stops at the first frame that is empty, from another
//! epoch, or torn. A torn frame at the end is what a crash during a write
//! leaves, and was never acknowledged (it was not synced), so it is dropped.
//! Anything else is [`Damage`]: a frame that passed its checksum but cannot
//! be read, or a broken frame followed by intact frames of the same epoch
//! (they were acknowledged after it, so it was too).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ratekeeper_core::Change;

const HEADER: usize = 12;

/// What was read from a log.
#[derive(Debug, Default)]
pub struct Replay {
    /// The batches of the anchored epoch, in order.
    pub batches: Vec<Vec<Change>>,
    /// Bytes those frames take from the start of the file.
    pub len: u64,
    /// The epoch whose frames were replayed.
    pub epoch: u32,
    /// The highest epoch of any intact frame anywhere in the file.
    pub newest_epoch: u32,
    /// Damage that is not a torn tail.
    pub damage: Option<Damage>,
}

/// A log that cannot be trusted past `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Where the damage starts, in bytes.
    pub offset: u64,
    /// What is wrong there.
    pub what: String,
}

/// Which epoch to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// The epoch the database names.
    Epoch(u32),
    /// Whichever the first intact frame has: for a store from before
    /// epochs were anchored.
    FirstFrame,
}

/// An open change log.
pub struct Log {
    file: File,
    /// Where the next frame goes: the bytes of valid frames before it.
    len: u64,
    /// The epoch of the frames being written.
    epoch: u32,
}

impl Log {
    /// Opens (or creates) the log, zero-filled to at least `preallocate`
    /// bytes, and reads the frames of `anchor`. Writing continues after
    /// them in the same epoch, until [`start`](Self::start).
    pub fn open(path: &Path, preallocate: u64, anchor: Anchor) -> std::io::Result<(Log, Replay)> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        let bytes = std::fs::read(path)?;
        let replay = read(&bytes, anchor);
        if (bytes.len() as u64) < preallocate {
            let zeros = vec![0; (preallocate - bytes.len() as u64) as usize];
            file.write_all_at(&zeros, bytes.len() as u64)?;
            file.sync_all()?;
        }
        let log = Log {
            file,
            len: replay.len,
            epoch: replay.epoch,
        };
        Ok((log, replay))
    }

    /// Writes one batch after the last and waits until it is on disk.
    pub fn append(&mut self, changes: &[Change]) -> std::io::Result<()> {
        let payload = serde_json::to_vec(changes).expect("changes always serialize");
        let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
        let epoch = self.epoch.to_le_bytes();
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&epoch);
        frame.extend_from_slice(&checksum(&epoch, &payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        self.file.write_all_at(&frame, self.len)?;
        self.file.sync_data()?;
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Bytes of frames in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no frame has been written since the log was started.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The epoch being written.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Starts the log afresh in `epoch`, once the database names it: its
    /// changes so far are safe there. Nothing needs syncing here: until
    /// the next frame overwrites it, the old first frame is of an epoch
    /// that is no longer read.
    pub fn start(&mut self, epoch: u32) {
        self.epoch = epoch;
        self.len = 0;
    }
}

fn checksum(epoch: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(epoch);
    hasher.update(payload);
    hasher.finalize()
}

/// An intact frame at `at`: its epoch, payload and length in all.
fn frame_at(bytes: &[u8], at: usize) -> Option<(u32, &[u8], usize)> {
    let header = bytes.get(at..at + HEADER)?;
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let (len, epoch, crc) = (word(0) as usize, word(4), word(8));
    if len == 0 {
        return None;
    }
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    (checksum(&header[4..8], payload) == crc).then_some((epoch, payload, HEADER + len))
}

/// Reads the frames of `anchor` from the start of `bytes`.
pub fn read(bytes: &[u8], anchor: Anchor) -> Replay {
    let mut replay = Replay::default();
    let mut epoch = match anchor {
        Anchor::Epoch(epoch) => Some(epoch),
        Anchor::FirstFrame => None,
    };
    let mut at = 0;
    while let Some((frame_epoch, payload, len)) = frame_at(bytes, at) {
        if epoch.is_some_and(|e| e != frame_epoch) {
            break;
        }
        match serde_json::from_slice(payload) {
            Ok(changes) => replay.batches.push(changes),
            Err(err) => {
                // It passed its checksum: this is no torn write.
                replay.damage = Some(Damage {
                    offset: at as u64,
                    what: format!("a frame that passed its checksum cannot be read: {err}"),
                });
                break;
            }
        }
        epoch = Some(frame_epoch);
        at += len;
    }
    replay.len = at as u64;
    replay.epoch = epoch.unwrap_or(0);
    // Every intact frame after the stop, at any offset: an epoch to stay
    // above, and, of the replayed epoch, proof that the stop is damage.
    let mut later = None;
    for offset in at..bytes.len().saturating_sub(HEADER) {
        if let Some((frame_epoch, _, _)) = frame_at(bytes, offset) {
            replay.newest_epoch = replay.newest_epoch.max(frame_epoch);
            if Some(frame_epoch) == epoch && offset > at && later.is_none() {
                later = Some(offset);
            }
        }
    }
    replay.newest_epoch = replay.newest_epoch.max(replay.epoch);
    if replay.damage.is_none()
        && let Some(later) = later
    {
        replay.damage = Some(Damage {
            offset: at as u64,
            what: format!(
                "the frame there is broken, yet an intact frame of the same epoch follows at \
                 offset {later}: acknowledged changes would be lost"
            ),
        });
    }
    replay
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deleted(name: &str) -> Change {
        Change::LimitDeleted(name.into())
    }

    fn open(path: &Path, anchor: Anchor) -> (Log, Replay) {
        Log::open(path, 4096, anchor).unwrap()
    }

    #[test]
    fn frames_survive_reopening_and_a_torn_frame_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, replay) = open(&path, Anchor::Epoch(7));
        assert!(replay.batches.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        log.append(&[deleted("a")]).unwrap();
        log.append(&[deleted("b"), deleted("c")]).unwrap();
        let valid = log.len();
        // A crash in the middle of a third frame: its header made it, not
        // all of its payload.
        log.file
            .write_all_at(&[200, 0, 0, 0, 7, 0, 0, 0, 1, 2, 3, 4, b'['], valid)
            .unwrap();
        drop(log);

        let (mut log, replay) = open(&path, Anchor::Epoch(7));
        assert_eq!(
            replay.batches,
            vec![vec![deleted("a")], vec![deleted("b"), deleted("c")]]
        );
        assert_eq!(replay.damage, None);
        assert_eq!(log.len(), valid);
        log.append(&[deleted("d")]).unwrap();
        drop(log);
        let (_, replay) = open(&path, Anchor::Epoch(7));
        assert_eq!(replay.batches.len(), 3);
        assert_eq!(replay.batches[2], vec![deleted("d")]);
    }

    #[test]
    fn a_broken_frame_with_intact_ones_after_it_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = open(&path, Anchor::Epoch(1));
        log.append(&[deleted("a")]).unwrap();
        let first = log.len();
        log.append(&[deleted("b")]).unwrap();
        log.append(&[deleted("c")]).unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[first as usize + HEADER + 2] ^= 0x01;
        let replay = read(&bytes, Anchor::Epoch(1));
        assert_eq!(replay.batches, vec![vec![deleted("a")]]);
        assert_eq!(replay.damage.unwrap().offset, first);
    }

    #[test]
    fn a_torn_first_frame_never_brings_back_an_older_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = open(&path, Anchor::Epoch(1));
        for name in ["old-1", "old-2", "old-3"] {
            log.append(&[deleted(name)]).unwrap();
        }
        // A checkpoint: the database now names epoch 2.
        log.start(2);
        log.append(&[deleted("new-1")]).unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..HEADER].copy_from_slice(&[9; HEADER]); // torn at power loss
        let replay = read(&bytes, Anchor::Epoch(2));
        assert!(replay.batches.is_empty());
        assert_eq!(
            replay.damage, None,
            "only a torn tail: nothing of epoch 2 follows"
        );
        // Whatever epoch comes next is above every frame left in the file.
        assert!(replay.newest_epoch >= 1);
        assert!(
            read(&bytes, Anchor::Epoch(replay.newest_epoch + 1))
                .batches
                .is_empty()
        );
    }

    #[test]
    fn frames_from_before_a_new_epoch_are_not_read_after_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = open(&path, Anchor::Epoch(4));
        log.append(&[deleted("old-1")]).unwrap();
        log.append(&[deleted("old-2")]).unwrap();
        log.append(&[deleted("old-3")]).unwrap();
        log.start(5);
        // Same length as the first old frame: the second old frame follows
        // it exactly, and must not be taken for a new one.
        log.append(&[deleted("new-1")]).unwrap();
        drop(log);
        let (mut log, replay) = open(&path, Anchor::Epoch(5));
        assert_eq!(replay.batches, vec![vec![deleted("new-1")]]);
        assert_eq!(replay.newest_epoch, 5);
        log.append(&[deleted("new-2")]).unwrap();
        drop(log);
        let (_, replay) = open(&path, Anchor::Epoch(5));
        assert_eq!(
            replay.batches,
            vec![vec![deleted("new-1")], vec![deleted("new-2")]]
        );
    }

    #[test]
    fn a_store_from_before_anchoring_replays_its_first_frames_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = open(&path, Anchor::Epoch(3));
        log.append(&[deleted("a")]).unwrap();
        drop(log);
        let (_, replay) = open(&path, Anchor::FirstFrame);
        assert_eq!((replay.batches.len(), replay.epoch), (1, 3));
    }
}
