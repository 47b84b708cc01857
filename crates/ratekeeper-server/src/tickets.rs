//! Tickets: a queued acquire that outlives the HTTP request that made it.
//!
//! An HTTP request waits a bounded time. If the acquire is still queued then,
//! its wait is parked here under a random ticket and the client continues on
//! the ticket. A parked wait nobody picks up within the lapse time is
//! dropped, which withdraws it from the queue; each parking arms one timer
//! for that, so nothing scans the table. A wait that is being waited on is
//! not in the table: if that HTTP request's connection drops, the wait is
//! dropped with it and leaves the queue at once.
//!
//! The table is bounded twice: by the server (`max_tickets` in all) and by
//! the quota of the token that asked (see [`crate::quota`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratekeeper_backend::Waiting;

use crate::error::ApiError;
use crate::quota::{Quota, TicketHold};
use ratekeeper_api::ErrorCode;

/// A ticket's id: 128 random bits as 32 hexadecimal digits.
pub type TicketId = String;

/// A wait, and the token quota its ticket counts against.
pub struct Parked {
    /// The queued acquire.
    pub waiting: Waiting,
    /// Counted against its token's quota while it lives (`None` on a
    /// server without tokens).
    pub hold: Option<TicketHold>,
}

struct Entry {
    parked: Parked,
    /// Which parking this is, so that the lapse timer of an earlier parking
    /// of the same ticket leaves this one alone.
    parking: u64,
}

/// The parked waits of one server.
pub struct Tickets {
    parked: Mutex<(HashMap<TicketId, Entry>, u64)>,
    lapse: Duration,
    /// The most parked at once, whoever asked.
    max: usize,
}

impl Tickets {
    /// An empty table whose tickets lapse after `lapse` without a waiter,
    /// holding at most `max` at once.
    pub fn new(lapse: Duration, max: usize) -> Arc<Self> {
        Arc::new(Tickets {
            parked: Mutex::new((HashMap::new(), 0)),
            lapse,
            max,
        })
    }

    /// How long a ticket lives without a waiter.
    pub fn lapse(&self) -> Duration {
        self.lapse
    }

    /// Parks a wait under a new ticket, counted against `quota` if the
    /// caller has one. Refused (and the wait dropped, which withdraws it)
    /// when the table or the quota is full.
    pub fn park_new(
        self: &Arc<Self>,
        waiting: Waiting,
        quota: Option<&Arc<Quota>>,
    ) -> Result<TicketId, ApiError> {
        if self.len() >= self.max {
            return Err(ApiError::new(
                ErrorCode::TooManyTickets,
                format!(
                    "this server holds {} parked tickets, its bound (max_tickets); retry shortly",
                    self.max
                ),
            ));
        }
        let hold = quota.map(Quota::park).transpose()?;
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        let ticket: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.park(ticket.clone(), Parked { waiting, hold });
        Ok(ticket)
    }

    /// Parks a wait under its ticket and arms its lapse timer.
    pub fn park(self: &Arc<Self>, ticket: TicketId, parked: Parked) {
        let parking = {
            let mut table = self.lock();
            table.1 += 1;
            let parking = table.1;
            table.0.insert(ticket.clone(), Entry { parked, parking });
            parking
        };
        let tickets = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(tickets.lapse).await;
            let lapsed = {
                let mut table = tickets.lock();
                match table.0.get(&ticket) {
                    Some(entry) if entry.parking == parking => table.0.remove(&ticket),
                    _ => None,
                }
            };
            // Dropped outside the lock: dropping withdraws the request.
            drop(lapsed);
        });
    }

    /// Takes a parked wait out of the table to wait on it.
    pub fn take(&self, ticket: &str) -> Option<Parked> {
        self.lock().0.remove(ticket).map(|entry| entry.parked)
    }

    /// Drops every parked wait (at shutdown).
    pub fn clear(&self) {
        let parked = std::mem::take(&mut self.lock().0);
        drop(parked);
    }

    /// How many waits are parked.
    pub fn len(&self) -> usize {
        self.lock().0.len()
    }

    /// Whether no wait is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<TicketId, Entry>, u64)> {
        self.parked
            .lock()
            .expect("the ticket table lock is never poisoned")
    }
}
