//! Tickets: a queued acquire that outlives the HTTP request that made it.
//!
//! An HTTP request waits a bounded time. If the acquire is still queued then,
//! its wait is parked here under a random ticket and the client continues on
//! the ticket. A parked wait nobody picks up within the lapse time is
//! dropped, which withdraws it from the queue; each parking arms one timer
//! for that, so nothing scans the table. A wait that is being waited on is
//! not in the table: if that HTTP request's connection drops, the wait is
//! dropped with it and leaves the queue at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratekeeper_backend::Waiting;

/// A ticket's id: 128 random bits as 32 hexadecimal digits.
pub type TicketId = String;

struct Parked {
    waiting: Waiting,
    /// Which parking this is, so that the lapse timer of an earlier parking
    /// of the same ticket leaves this one alone.
    parking: u64,
}

/// The parked waits of one server.
pub struct Tickets {
    parked: Mutex<(HashMap<TicketId, Parked>, u64)>,
    lapse: Duration,
}

impl Tickets {
    /// An empty table whose tickets lapse after `lapse` without a waiter.
    pub fn new(lapse: Duration) -> Arc<Self> {
        Arc::new(Tickets {
            parked: Mutex::new((HashMap::new(), 0)),
            lapse,
        })
    }

    /// How long a ticket lives without a waiter.
    pub fn lapse(&self) -> Duration {
        self.lapse
    }

    /// Parks a wait under a new ticket.
    pub fn park_new(self: &Arc<Self>, waiting: Waiting) -> TicketId {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        let ticket: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.park(ticket.clone(), waiting);
        ticket
    }

    /// Parks a wait under its ticket and arms its lapse timer.
    pub fn park(self: &Arc<Self>, ticket: TicketId, waiting: Waiting) {
        let parking = {
            let mut table = self.lock();
            table.1 += 1;
            let parking = table.1;
            table.0.insert(ticket.clone(), Parked { waiting, parking });
            parking
        };
        let tickets = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(tickets.lapse).await;
            let lapsed = {
                let mut table = tickets.lock();
                match table.0.get(&ticket) {
                    Some(parked) if parked.parking == parking => table.0.remove(&ticket),
                    _ => None,
                }
            };
            // Dropped outside the lock: dropping withdraws the request.
            drop(lapsed);
        });
    }

    /// Takes a parked wait out of the table to wait on it.
    pub fn take(&self, ticket: &str) -> Option<Waiting> {
        self.lock().0.remove(ticket).map(|parked| parked.waiting)
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

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<TicketId, Parked>, u64)> {
        self.parked
            .lock()
            .expect("the ticket table lock is never poisoned")
    }
}
