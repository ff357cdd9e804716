//! The replica's drain on SIGTERM, as sessions see it: once it starts, new sessions are
//! refused retryably and live ones finish the segment under way, then end with
//! `ltx2_stream_complete {reason: draining}` and close 1001 — at the latest when the grace
//! period is over.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Starts the drain; every [`SessionContext`](super::SessionContext) clone sees it.
#[derive(Debug, Clone)]
pub struct Drain {
    started: watch::Sender<Option<Instant>>,
    grace: Duration,
}

impl Drain {
    /// A drain that gives live sessions `grace` to finish.
    pub fn new(grace: Duration) -> Self {
        Self {
            started: watch::Sender::new(None),
            grace,
        }
    }

    /// Starts draining (once; later calls keep the first start).
    pub fn start(&self) {
        self.started.send_if_modified(|started| {
            let first = started.is_none();
            started.get_or_insert_with(Instant::now);
            first
        });
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        self.started.borrow().is_some()
    }

    /// The moment live sessions must be over, once draining.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.borrow().map(|t| t + self.grace)
    }

    /// Resolves when the drain starts (at once if it has).
    pub async fn started(&self) {
        let mut rx = self.started.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starting_wakes_waiters_once_and_sets_the_deadline() {
        let drain = Drain::new(Duration::from_secs(7));
        assert!(!drain.is_draining());
        assert_eq!(drain.deadline(), None);
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.started().await }
        });
        drain.start();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .unwrap();
        let deadline = drain.deadline().expect("set");
        drain.start();
        assert_eq!(drain.deadline(), Some(deadline), "the first start counts");
        assert!(deadline > Instant::now() + Duration::from_secs(6));
    }
}
