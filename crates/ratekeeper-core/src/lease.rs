//! Leases (held slots with a TTL, for holders in other processes) and permits
//! (held slots tied to a guard in this process).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use smallvec::SmallVec;

use crate::error::LeaseError;
use crate::limit::LimitId;
use crate::time::Timestamp;

/// The shortest lease TTL allowed.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
/// The longest lease TTL allowed.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The TTL of a lease when the request names none.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// A lease's identity: 128 random bits, so that it cannot be guessed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId([u8; 16]);

impl LeaseId {
    /// The id from its 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        LeaseId(bytes)
    }

    /// Its 16 bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

/// Shown as 32 lowercase hexadecimal digits.
impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written in one piece: an id is formatted into every lease record
        // the store writes and every answer that names it.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0; 32];
        for (pair, byte) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        f.write_str(std::str::from_utf8(&text).expect("hexadecimal digits are ASCII"))
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({self})")
    }
}

/// The text was not 32 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a lease id is 32 hexadecimal digits")]
pub struct ParseLeaseIdError;

impl FromStr for LeaseId {
    type Err = ParseLeaseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Canonical only: exactly 32 lowercase hexadecimal digits, as
        // `Display` writes them (no sign, no upper case).
        let canonical = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if text.len() != 32 || !text.as_bytes().iter().all(canonical) {
            return Err(ParseLeaseIdError);
        }
        let mut bytes = [0; 16];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| ParseLeaseIdError)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| ParseLeaseIdError)?;
        }
        Ok(LeaseId(bytes))
    }
}

/// Stored and sent as its text form.
#[cfg(feature = "serde")]
impl serde::Serialize for LeaseId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for LeaseId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a granted lease tells its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease to renew and release.
    pub id: LeaseId,
    /// When it expires unless renewed.
    pub expires_at: Timestamp,
}

/// A read-only picture of a live lease; also what a store keeps of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LeaseView {
    /// Its id.
    pub id: LeaseId,
    /// The limits it holds slots on (limits that were inactive at the grant,
    /// or have been deleted since, are not listed: it holds nothing there).
    pub limits: Vec<String>,
    /// How many slots it holds on each.
    pub occupy: u64,
    /// The holder's label.
    pub holder: Option<String>,
    /// When it was granted.
    pub granted_at: Timestamp,
    /// When it expires unless renewed.
    pub expires_at: Timestamp,
    /// The TTL each renewal extends it by.
    pub ttl: Duration,
}

/// Slots held on behalf of a guard in this process, with no TTL and no id.
///
/// The in-process limiter hands one to a guard, which gives it back through
/// [`crate::Engine::release_permit`] when dropped. It cannot be cloned, so it
/// is released at most once. A permit whose limit was reset or deleted since
/// frees nothing there.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit holds slots until it is given back to the engine"]
pub struct Permit {
    /// Each limit held, with its generation at the grant.
    pub(crate) holds: SmallVec<[(LimitId, u64); 2]>,
    pub(crate) occupy: u64,
}

impl Permit {
    /// How many slots it holds on each of its limits.
    pub fn occupy(&self) -> u64 {
        self.occupy
    }
}

/// Slots of one limit taken without a grant, for a caller that hands them
/// out by itself while nobody waits: the in-process limiter's lock-free
/// path (see [`crate::Engine::reserve`]). Like a permit it cannot be cloned;
/// give it back with [`crate::Engine::shrink_reservation`]. One taken before
/// its limit was reset or deleted frees nothing there.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation holds slots until it is given back to the engine"]
pub struct Reservation {
    pub(crate) limit: LimitId,
    pub(crate) generation: u64,
    pub(crate) slots: u64,
}

impl Reservation {
    /// How many slots it holds.
    pub fn slots(&self) -> u64 {
        self.slots
    }
}

/// A rate limit's pacing, handed to a caller that admits one slot at a
/// time by itself (with one atomic drain instant) while nobody waits: the
/// in-process limiter's lock-free rate path (see
/// [`crate::Engine::pace`]). The caller admits one slot at `now` when
/// `now + slack_nanos >= drained_at`, and then moves the drain instant to
/// `max(drained_at, now) + drain_nanos`: exactly the engine's own rule for
/// one slot. Give the instant back with [`crate::Engine::settle_pacing`]
/// before the engine decides anything else about the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Pacing {
    pub(crate) limit: LimitId,
    pub(crate) generation: u64,
    /// The limit's drain instant when it was handed out.
    pub drained_at: Timestamp,
    /// How long before the drain instant one more slot fits.
    pub slack_nanos: u64,
    /// How far one admitted slot moves the drain instant.
    pub drain_nanos: u64,
    /// Slots per second the limit drains at.
    pub rate: f64,
}

impl Pacing {
    /// Admits one slot at `now` while the drain instant is `drained_at`:
    /// the drain instant after it, or `None` if the slot does not fit yet.
    #[inline]
    pub fn admit(&self, drained_at: Timestamp, now: Timestamp) -> Option<Timestamp> {
        Pacing::admit_nanos(
            drained_at.as_unix_nanos(),
            now.as_unix_nanos(),
            self.slack_nanos,
            self.drain_nanos,
        )
        .map(Timestamp::from_unix_nanos)
    }

    /// [`admit`](Self::admit) on instants in nanoseconds since the epoch,
    /// with the pacing's two spans given apart (a lock-free holder keeps
    /// them in atomics).
    #[inline]
    pub fn admit_nanos(
        drained_at: u64,
        now: u64,
        slack_nanos: u64,
        drain_nanos: u64,
    ) -> Option<u64> {
        (drained_at <= now.saturating_add(slack_nanos))
            .then(|| drained_at.max(now).saturating_add(drain_nanos))
    }

    /// The slots not yet decayed at `now` while the drain instant is
    /// `drained_at`, as a view of the limit shows them.
    pub fn decaying(&self, drained_at: Timestamp, now: Timestamp) -> f64 {
        crate::limit::decaying_level(drained_at, self.rate, now)
    }
}

/// A live lease's internal state.
#[derive(Debug)]
pub(crate) struct Lease {
    /// The limits it holds slots on: those that were active at the grant.
    pub limits: SmallVec<[LimitId; 2]>,
    pub occupy: u64,
    pub holder: Option<Box<str>>,
    pub ttl: Duration,
    pub granted_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Refuses a lease TTL outside [`MIN_LEASE_TTL`]..=[`MAX_LEASE_TTL`].
pub fn check_ttl(ttl: Duration) -> Result<(), LeaseError> {
    if (MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl) {
        Ok(())
    } else {
        Err(LeaseError::InvalidTtl {
            millis: ttl.as_millis(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_round_trip_through_text() {
        let id = LeaseId::from_bytes([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text, "ab".repeat(16));
        assert_eq!(text.parse::<LeaseId>(), Ok(id));
    }

    #[test]
    fn malformed_lease_ids_are_refused() {
        for text in ["", "ab", &"zz".repeat(16), &"é".repeat(16), &"a".repeat(33)] {
            assert_eq!(text.parse::<LeaseId>(), Err(ParseLeaseIdError), "{text}");
        }
    }
}
