//! Requests an instance waits for: parked from before their acquire
//! function runs until their outcome arrives or they are withdrawn.

use std::sync::Arc;

use ratekeeper_backend::{Error, Granted};
use ratekeeper_core::AcquireError;
use tokio::sync::oneshot;

use crate::STATUS_BACKSTOP;
use crate::instance::{Inner, settled, unavailable};
use crate::reply::{Outcome, Reply};

/// A request this instance parks. Dropped before it is settled (its client
/// went away), it withdraws the request, giving back a grant that arrived
/// meanwhile.
pub(crate) struct ParkedRequest {
    pub(crate) inner: Arc<Inner>,
    /// The partition it waits in.
    pub(crate) part: usize,
    pub(crate) token: String,
    pub(crate) settled: bool,
}

impl ParkedRequest {
    pub(crate) fn new(
        inner: Arc<Inner>,
        part: usize,
        token: String,
        sender: oneshot::Sender<Outcome>,
    ) -> Self {
        inner.parked().insert((part, token.clone()), sender);
        ParkedRequest {
            inner,
            part,
            token,
            settled: false,
        }
    }

    pub(crate) fn settle(&mut self) {
        self.settled = true;
        self.inner.parked().remove(&(self.part, self.token.clone()));
    }

    pub(crate) async fn wait(
        mut self,
        mut receiver: oneshot::Receiver<Outcome>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Granted, Error> {
        let mut backstop = tokio::time::interval(STATUS_BACKSTOP);
        backstop.tick().await;
        let timeout = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timeout);
        loop {
            tokio::select! {
                outcome = &mut receiver => {
                    self.settle();
                    return match outcome {
                        Ok(outcome) => settled(&self.inner, self.part, outcome).await,
                        Err(_) => Err(unavailable("the wake channel closed")),
                    };
                }
                () = &mut timeout => {
                    let reply = self.inner.cancel(self.part, &self.token, "timeout").await?;
                    self.settle();
                    return match reply {
                        Reply::Settled { settled: outcome } => {
                            settled(&self.inner, self.part, outcome).await
                        }
                        _ => Err(AcquireError::TimedOut.into()),
                    };
                }
                _ = backstop.tick() => {
                    let status = &self.inner.scripts.status;
                    let reply: Reply<serde_json::Value> =
                        self.inner.run(self.part, status, &[("token", &self.token)]).await?;
                    match reply {
                        Reply::Settled { settled: outcome } => {
                            self.settle();
                            return settled(&self.inner, self.part, outcome).await;
                        }
                        Reply::Gone { .. } => {
                            self.settle();
                            return Err(unavailable(
                                "the request was withdrawn (this instance was taken for dead); ask again",
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

impl Drop for ParkedRequest {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.inner.parked().remove(&(self.part, self.token.clone()));
        let (inner, part, token) = (Arc::clone(&self.inner), self.part, self.token.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = inner.cancel(part, &token, "abandon").await {
                    tracing::warn!(%err, "withdrawing an abandoned request failed; it is withdrawn when this instance is taken for dead");
                }
            });
        }
    }
}
