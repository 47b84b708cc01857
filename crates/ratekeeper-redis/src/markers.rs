//! What a store records about itself: the version of its key layout and
//! its partition count, checked by every instance that uses it.

use ratekeeper_backend::Error;

use crate::connection::Connection;
use crate::instance::unavailable;
use crate::{DEFAULT_CLUSTER_PARTITIONS, MAX_PARTITIONS};

/// The version of the key layout (the keys, their types and what the
/// functions keep in them) this release reads and writes. Version 1 is the
/// layout of 0.1.0, which recorded no version.
pub const KEY_LAYOUT: u32 = 1;

/// Refuses a store under `prefix` whose keys were laid out by another
/// release; records [`KEY_LAYOUT`] on a new store (or one of 0.1.0, whose
/// layout it is).
pub(crate) async fn check_layout(conn: &Connection, prefix: &str) -> Result<(), Error> {
    let record = redis::cmd("SET")
        .arg(format!("{{{prefix}}}:layout"))
        .arg(KEY_LAYOUT)
        .arg("NX")
        .arg("GET")
        .to_owned();
    let recorded: Option<String> = conn.query(&record).await.map_err(unavailable)?;
    match recorded {
        None => Ok(()),
        Some(found) if found == KEY_LAYOUT.to_string() => Ok(()),
        Some(found) => Err(Error::Misconfigured {
            reason: format!(
                "the store under prefix {prefix:?} has key layout {found}, and this release of \
                 ratekeeper reads layout {KEY_LAYOUT} only: run the release that wrote it (or a \
                 newer one), or use another prefix; its keys were left as they are"
            ),
        }),
    }
}

/// How many partitions the store under `prefix` has: the count recorded
/// with it, or `wanted` (or the default) recorded now for a new store.
pub(crate) async fn partition_count(
    conn: &Connection,
    prefix: &str,
    wanted: Option<u32>,
) -> Result<u32, Error> {
    if let Some(count) = wanted
        && !(1..=MAX_PARTITIONS).contains(&count)
    {
        return Err(Error::Misconfigured {
            reason: format!("a store has 1 to {MAX_PARTITIONS} partitions, not {count}"),
        });
    }
    let default = if conn.is_cluster() {
        DEFAULT_CLUSTER_PARTITIONS
    } else {
        1
    };
    // Recorded once, by whichever instance comes first; SET NX GET
    // answers what was there before.
    let record = redis::cmd("SET")
        .arg(format!("{{{prefix}}}:partitions"))
        .arg(wanted.unwrap_or(default))
        .arg("NX")
        .arg("GET")
        .to_owned();
    let recorded: Option<u32> = conn.query(&record).await.map_err(unavailable)?;
    match (recorded, wanted) {
        (Some(recorded), Some(wanted)) if recorded != wanted => Err(Error::Misconfigured {
            reason: format!(
                "the store under prefix {prefix:?} is split into {recorded} partitions, not \
                 {wanted}; a store keeps its first count (leave the count out to use it, or \
                 choose another prefix)"
            ),
        }),
        (Some(recorded), _) if !(1..=MAX_PARTITIONS).contains(&recorded) => {
            Err(Error::Misconfigured {
                reason: format!(
                    "the store under prefix {prefix:?} records {recorded} partitions, and a \
                     store has 1 to {MAX_PARTITIONS}: its keys were written by something else"
                ),
            })
        }
        (recorded, wanted) => Ok(recorded.or(wanted).unwrap_or(default)),
    }
}
