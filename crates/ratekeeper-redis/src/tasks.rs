//! The background work of an instance: listening to the channels, the
//! due work of each partition, the event feed and the heartbeat.

use std::sync::Weak;
use std::time::Duration;

use ratekeeper_backend::Event;

use crate::connection::Subscription;
use crate::instance::{Inner, local_micros};
use crate::reply::{self, Outcome};
use crate::{HEARTBEAT, TICK_BACKSTOP};

/// The channels every instance listens to: outcomes of queued requests
/// and announced instants.
pub(crate) const LISTENED: &[&str] = &["wake", "timer"];

/// Delivers published outcomes to parked waiters and announced instants to
/// the ticker. Re-subscribes after a lost connection (the backstops cover
/// what was missed meanwhile).
pub(crate) async fn listen(weak: Weak<Inner>, mut subscription: Subscription) {
    loop {
        {
            while let Some(message) = subscription.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                let channel = message.get_channel_name();
                if let Some(part) = inner.layout.part_of_channel(channel, "wake") {
                    if let Ok(outcome) = serde_json::from_str::<Outcome>(&payload) {
                        inner.deliver(part, outcome);
                    }
                } else if let Some(part) = inner.layout.part_of_channel(channel, "timer")
                    && let Ok(at) = payload.parse::<u64>()
                {
                    inner.due[part].send_replace(Some(at));
                }
            }
        }
        match resubscribe(&weak, LISTENED, async |_| true).await {
            Some(fresh) => subscription = fresh,
            None => return,
        }
        if let Some(inner) = weak.upgrade() {
            inner.catch_up().await;
        }
    }
}

/// After a lost connection: subscribes to every partition's `kinds` of
/// channel again, trying every 200 ms; `None` once the backend is gone or
/// `keep_trying` says no.
pub(crate) async fn resubscribe(
    weak: &Weak<Inner>,
    kinds: &[&str],
    keep_trying: impl AsyncFn(&Inner) -> bool,
) -> Option<Subscription> {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let inner = weak.upgrade()?;
        if !keep_trying(&inner).await {
            return None;
        }
        if let Ok(fresh) = inner.subscribe(&inner.channels(kinds)).await {
            return Some(fresh);
        }
    }
}

/// Runs partition `part`'s due work when it is due: at the instant the
/// last tick or an announcement named, and at least every
/// [`TICK_BACKSTOP`].
pub(crate) async fn tick_loop(weak: Weak<Inner>, part: usize) {
    let mut due = match weak.upgrade() {
        Some(inner) => inner.due[part].subscribe(),
        None => return,
    };
    loop {
        let next = {
            let Some(inner) = weak.upgrade() else { return };
            inner.tick(part).await.ok().flatten()
        };
        let mut wait = next.map_or(TICK_BACKSTOP, |at| {
            Duration::from_micros(at.saturating_sub(local_micros())).min(TICK_BACKSTOP)
        });
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => break,
                changed = due.changed() => {
                    if changed.is_err() { return; }
                    let Some(at) = *due.borrow_and_update() else { continue };
                    let until = Duration::from_micros(at.saturating_sub(local_micros()));
                    if until >= wait { continue; }
                    wait = until;
                }
            }
        }
    }
}

/// How often the event feed checks whether anyone still receives it, and
/// tells the functions that someone does.
pub(crate) const FEED_CHECK: Duration = Duration::from_secs(1);
/// How long the functions keep describing changes after the last word
/// that someone watches them.
pub(crate) const WATCHED_TTL: Duration = Duration::from_secs(3);

/// Forwards published changes to this instance's event receivers until
/// none is left; then it unsubscribes, and the scripts stop describing
/// changes once no instance listens.
pub(crate) async fn feed_events(weak: Weak<Inner>, mut subscription: Subscription) {
    let mut check = tokio::time::interval(FEED_CHECK);
    loop {
        {
            loop {
                tokio::select! {
                    message = subscription.next() => {
                        let Some(message) = message else { break };
                        let Some(inner) = weak.upgrade() else { return };
                        let payload: String = message.get_payload().unwrap_or_default();
                        match serde_json::from_str(&payload) {
                            // One partition's copy of a template: shown whole.
                            Ok(reply::Change::Limit(limit))
                                if limit.is_template() && inner.layout.count() > 1 =>
                            {
                                if let Ok(limit) = inner.template_view(limit.name()).await {
                                    let _ = inner.events.send(Event::Limit(limit));
                                }
                            }
                            Ok(change) => inner.publish_change(change),
                            Err(_) => {}
                        }
                    }
                    _ = check.tick() => {
                        let Some(inner) = weak.upgrade() else { return };
                        if stop_feed_if_unwatched(&inner).await {
                            return;
                        }
                        if let Err(err) = inner.mark_watched().await {
                            tracing::warn!(%err, "telling Redis that changes are watched failed");
                        }
                    }
                }
            }
        }
        // The connection was lost: changes published until it is back are
        // missed, which the receivers are told once it is.
        let watched = async |inner: &Inner| !stop_feed_if_unwatched(inner).await;
        match resubscribe(&weak, &["events"], watched).await {
            Some(fresh) => subscription = fresh,
            None => return,
        }
        if let Some(inner) = weak.upgrade() {
            let _ = inner.events.send(Event::Missed);
        }
    }
}

/// Marks the event feed stopped if nobody receives it; true if so.
pub(crate) async fn stop_feed_if_unwatched(inner: &Inner) -> bool {
    let mut feeding = inner.event_feed.lock().await;
    if inner.events.receiver_count() > 0 {
        return false;
    }
    *feeding = false;
    true
}

pub(crate) async fn heartbeat_loop(weak: Weak<Inner>) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Some(inner) = weak.upgrade() else { return };
        // A heartbeat stuck on a node that died (a failover is under way)
        // must not hold up the next one, which reaches its successor.
        match tokio::time::timeout(HEARTBEAT, inner.heartbeat()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "heartbeat to Redis failed"),
            Err(_) => tracing::warn!("heartbeat to Redis timed out"),
        }
    }
}
