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
//! Reading starts at offset 0 and stops at the first frame that is empty,
//! torn (its checksum fails) or from another epoch than the first frame.
//! Each reuse of the file bumps the epoch, so frames left over from before a
//! checkpoint are never read as new ones. A torn frame was never synced, so
//! nobody was answered on it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ratekeeper_core::Change;

const HEADER: usize = 12;

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
    /// bytes, and reads its valid frames.
    pub fn open(path: &Path, preallocate: u64) -> std::io::Result<(Log, Vec<Vec<Change>>)> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        let bytes = std::fs::read(path)?;
        let (batches, len, epoch) = read_frames(&bytes);
        if (bytes.len() as u64) < preallocate {
            let zeros = vec![0; (preallocate - bytes.len() as u64) as usize];
            file.write_all_at(&zeros, bytes.len() as u64)?;
            file.sync_all()?;
        }
        let log = Log {
            file,
            len: len as u64,
            epoch,
        };
        Ok((log, batches))
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

    /// Starts the log afresh: its changes are safe elsewhere. Nothing needs
    /// syncing here: until the next frame overwrites it, the old first frame
    /// still reads as the old epoch, and replaying changes that are already
    /// in the database changes nothing.
    pub fn clear(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.len = 0;
    }
}

fn checksum(epoch: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(epoch);
    hasher.update(payload);
    hasher.finalize()
}

/// The batches of every valid frame, how many bytes they take, and the
/// epoch to keep writing in.
fn read_frames(bytes: &[u8]) -> (Vec<Vec<Change>>, usize, u32) {
    let mut batches = Vec::new();
    let mut at = 0;
    let mut current = None;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let (len, epoch, crc) = (word(0) as usize, word(4), word(8));
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if len == 0 || current.is_some_and(|e| e != epoch) {
            break;
        }
        if checksum(&header[4..8], payload) != crc {
            break;
        }
        let Ok(changes) = serde_json::from_slice(payload) else {
            break;
        };
        current = Some(epoch);
        batches.push(changes);
        at += HEADER + len;
    }
    (batches, at, current.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deleted(name: &str) -> Change {
        Change::LimitDeleted(name.into())
    }

    fn open(path: &Path) -> (Log, Vec<Vec<Change>>) {
        Log::open(path, 4096).unwrap()
    }

    #[test]
    fn frames_survive_reopening_and_a_torn_frame_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, batches) = open(&path);
        assert!(batches.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        log.append(&[deleted("a")]).unwrap();
        log.append(&[deleted("b"), deleted("c")]).unwrap();
        let valid = log.len();
        // A crash in the middle of a third frame: its header made it, not
        // all of its payload.
        log.file
            .write_all_at(&[200, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, b'['], valid)
            .unwrap();
        drop(log);

        let (mut log, batches) = open(&path);
        assert_eq!(
            batches,
            vec![vec![deleted("a")], vec![deleted("b"), deleted("c")]]
        );
        assert_eq!(log.len(), valid);
        log.append(&[deleted("d")]).unwrap();
        drop(log);
        let (_, batches) = open(&path);
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[2], vec![deleted("d")]);
    }

    #[test]
    fn a_corrupted_frame_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = open(&path);
        log.append(&[deleted("a")]).unwrap();
        let first = log.len();
        log.append(&[deleted("b")]).unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[first as usize + HEADER + 2] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let (_, batches) = open(&path);
        assert_eq!(batches, vec![vec![deleted("a")]]);
    }

    #[test]
    fn frames_from_before_a_clear_are_not_read_after_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = open(&path);
        log.append(&[deleted("old-1")]).unwrap();
        log.append(&[deleted("old-2")]).unwrap();
        log.append(&[deleted("old-3")]).unwrap();
        log.clear();
        // Same length as the first old frame: the second old frame follows
        // it exactly, and must not be taken for a new one.
        log.append(&[deleted("new-1")]).unwrap();
        drop(log);
        let (mut log, batches) = open(&path);
        assert_eq!(batches, vec![vec![deleted("new-1")]]);
        log.append(&[deleted("new-2")]).unwrap();
        drop(log);
        let (_, batches) = open(&path);
        assert_eq!(
            batches,
            vec![vec![deleted("new-1")], vec![deleted("new-2")]]
        );
    }
}
