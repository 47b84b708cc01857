//! How the state is split into partitions: each partition is one key
//! prefix with its own hash tag, so one Redis Cluster slot, and every
//! operation on it is one atomic function call. A limit lives in the
//! partition its name hashes to; so do its queue and the leases on it.
//!
//! With one partition (the default on a single Redis) everything is under
//! `{PREFIX}:`. With several, partition `k` is under `{PREFIX.pK.J}:`, `J`
//! chosen so that the tag's slot lies in the `k`-th equal share of the
//! slot space: a cluster that splits its slots evenly gets an even share
//! of the partitions on every primary.
//!
//! A lease on limits of several partitions has a part in each. Its id says
//! which: the first four bytes are the bit set of its partitions.

use ratekeeper_core::LeaseId;

/// The most partitions a store can have: a lease id has 32 bits for them.
pub const MAX_PARTITIONS: u32 = 32;
const SLOTS: u32 = 16384;

/// The partitions of one store (prefix).
#[derive(Debug, Clone)]
pub struct Layout {
    /// One key prefix per partition, hash tag included; never empty.
    prefixes: Vec<String>,
}

impl Layout {
    /// The layout of `count` partitions (1 to [`MAX_PARTITIONS`]) under
    /// `prefix`.
    pub fn new(prefix: &str, count: u32) -> Layout {
        assert!((1..=MAX_PARTITIONS).contains(&count));
        let prefixes = if count == 1 {
            vec![format!("{{{prefix}}}:")]
        } else {
            (0..count).map(|k| spread_tag(prefix, k, count)).collect()
        };
        Layout { prefixes }
    }

    /// How many partitions there are.
    pub fn count(&self) -> usize {
        self.prefixes.len()
    }

    /// Partition `part`'s key prefix.
    pub fn prefix(&self, part: usize) -> &str {
        &self.prefixes[part]
    }

    /// The partition whose `kind` channel `channel` is.
    pub fn part_of_channel(&self, channel: &str, kind: &str) -> Option<usize> {
        let prefix = channel.strip_suffix(kind)?;
        self.prefixes.iter().position(|p| p == prefix)
    }

    /// The partition a limit lives in.
    pub fn of(&self, name: &str) -> usize {
        usize::from(slot(name.as_bytes())) % self.count()
    }

    /// `names` grouped by partition, in partition order (the order in
    /// which a request across partitions takes them); within a partition
    /// they keep the caller's order.
    pub fn split<'n>(&self, names: &'n [String]) -> Vec<(usize, Vec<&'n str>)> {
        let mut parts: Vec<(usize, Vec<&str>)> = Vec::new();
        for name in names {
            let part = self.of(name);
            match parts.iter_mut().find(|(p, _)| *p == part) {
                Some((_, group)) => group.push(name),
                None => parts.push((part, vec![name])),
            }
        }
        parts.sort_by_key(|(part, _)| *part);
        parts
    }

    /// A fresh lease id (and request token) for a request on `parts`.
    pub fn new_id(&self, parts: impl IntoIterator<Item = usize>) -> LeaseId {
        let mut bytes = random_id().to_bytes();
        if self.count() > 1 {
            let mask = parts.into_iter().fold(0u32, |mask, part| mask | 1 << part);
            bytes[..4].copy_from_slice(&mask.to_be_bytes());
        }
        LeaseId::from_bytes(bytes)
    }

    /// The partitions a lease has parts in; none for an id this layout
    /// never gave out.
    pub fn parts_of(&self, id: LeaseId) -> Vec<usize> {
        if self.count() == 1 {
            return vec![0];
        }
        let bytes = id.to_bytes();
        let mask = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if mask >> self.count() != 0 {
            return Vec::new();
        }
        (0..self.count())
            .filter(|part| mask & 1 << part != 0)
            .collect()
    }
}

/// An id of 16 random bytes.
pub fn random_id() -> LeaseId {
    let mut bytes = [0; 16];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    LeaseId::from_bytes(bytes)
}

/// The Redis Cluster slot of `key` (no hash tag in it).
fn slot(key: &[u8]) -> u16 {
    (crc16::State::<crc16::XMODEM>::calculate(key) as u32 % SLOTS) as u16
}

/// Partition `k`'s prefix: a tag whose slot is in the `k`-th share.
fn spread_tag(prefix: &str, k: u32, count: u32) -> String {
    let share = (k * SLOTS / count)..((k + 1) * SLOTS / count);
    (0u32..)
        .map(|j| format!("{prefix}.p{k}.{j}"))
        .find(|tag| share.contains(&u32::from(slot(tag.as_bytes()))))
        .map(|tag| format!("{{{tag}}}:"))
        .expect("some suffix lands in every share")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_keeps_the_plain_prefix_and_any_id() {
        let layout = Layout::new("rk", 1);
        assert_eq!(layout.prefix(0), "{rk}:");
        let id: LeaseId = "ffffffffffffffffffffffffffffffff".parse().unwrap();
        assert_eq!(layout.parts_of(id), [0]);
    }

    #[test]
    fn partitions_get_one_share_of_the_slots_each() {
        let layout = Layout::new("rk", 4);
        for k in 0..4 {
            let prefix = layout.prefix(k);
            let tag = &prefix[1..prefix.len() - 2];
            let slot = u32::from(slot(tag.as_bytes()));
            assert_eq!(slot * 4 / SLOTS, k as u32, "{prefix}");
        }
    }

    #[test]
    fn slots_match_redis() {
        // Known values from Redis's CLUSTER KEYSLOT.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
    }

    #[test]
    fn lease_ids_carry_their_partitions() {
        let layout = Layout::new("rk", 8);
        let names: Vec<String> = (0..40).map(|i| format!("limit-{i}")).collect();
        let parts = layout.split(&names);
        assert!(parts.len() > 1);
        assert!(parts.windows(2).all(|w| w[0].0 < w[1].0));
        for (part, group) in &parts {
            assert!(group.iter().all(|name| layout.of(name) == *part));
        }
        let id = layout.new_id(parts.iter().map(|(part, _)| *part));
        let carried: Vec<usize> = parts.iter().map(|(part, _)| *part).collect();
        assert_eq!(layout.parts_of(id), carried);
        let foreign: LeaseId = "ffffffff000000000000000000000000".parse().unwrap();
        assert!(layout.parts_of(foreign).is_empty());
    }
}
