//! Acknowledgements: a source learns when every event of a batch it emitted is handled.
//!
//! An [`Ack`] travels with a batch and every piece cut from it (filtered, routed, fanned out to
//! several sinks). When the last clone is dropped the source's [`AckWaiter`] resolves: with
//! `Ok` if every holder was done with it (a sink wrote it, a filter dropped it, a dead letter
//! was written), or with the first failure a holder reported via [`Ack::fail`] (for instance a
//! sink that shut down before it could write). A crash resolves nothing, so a source that
//! waits before committing its position replays what was not acknowledged.
//!
//! A source that answers a client (the `http` source) can also learn which of its events the
//! decoder refused and why: [`Ack::reporting`] makes an ack that collects them.

use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Default)]
pub struct Ack(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    tx: Mutex<Option<oneshot::Sender<Result<Rejected, String>>>>,
    failure: Mutex<Option<String>>,
    /// Collected only for a [`Ack::reporting`] ack.
    rejected: Option<Mutex<Rejected>>,
}

/// The events of a batch the decoder refused: how many, and the first
/// [`Rejected::LISTED`] of them by position in the batch, with the reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub count: usize,
    pub listed: Vec<(usize, String)>,
}

impl Rejected {
    /// Reasons kept per batch: enough to fix a client, bounded whatever it sends.
    pub const LISTED: usize = 100;

    pub fn add(&mut self, index: usize, reason: &str) {
        self.count += 1;
        if self.listed.len() < Self::LISTED {
            self.listed.push((index, reason.to_string()));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tx = self.tx.get_mut().map(Option::take).unwrap_or(None);
        if let Some(tx) = tx {
            let failure = self.failure.get_mut().map(Option::take).unwrap_or(None);
            let rejected = self.rejected.take().and_then(|r| r.into_inner().ok()).unwrap_or_default();
            // The source may have stopped waiting; nothing to tell then.
            let _ = tx.send(failure.map_or(Ok(rejected), Err));
        }
    }
}

/// Resolves when every clone of the matching [`Ack`] is gone.
#[derive(Debug)]
pub struct AckWaiter(oneshot::Receiver<Result<Rejected, String>>);

impl AckWaiter {
    pub async fn wait(self) -> Result<(), String> {
        self.report().await.map(drop)
    }

    /// [`AckWaiter::wait`], with the events the decoder refused (none unless the ack was made
    /// by [`Ack::reporting`]).
    pub async fn report(self) -> Result<Rejected, String> {
        self.0.await.unwrap_or_else(|_| Err("acknowledgement lost".into()))
    }
}

impl Ack {
    /// A tracked acknowledgement and the waiter that learns its outcome.
    pub fn new() -> (Ack, AckWaiter) {
        Self::make(false)
    }

    /// [`Ack::new`], collecting the events the decoder refuses ([`Ack::reject`]).
    pub fn reporting() -> (Ack, AckWaiter) {
        Self::make(true)
    }

    fn make(reporting: bool) -> (Ack, AckWaiter) {
        let (tx, rx) = oneshot::channel();
        let inner = Inner {
            tx: Mutex::new(Some(tx)),
            failure: Mutex::new(None),
            rejected: reporting.then(|| Mutex::new(Rejected::default())),
        };
        (Ack(Some(Arc::new(inner))), AckWaiter(rx))
    }

    /// Record that event `index` of the batch this ack was made for could not be decoded.
    pub fn reject(&self, index: usize, reason: &str) {
        if let Some(inner) = &self.0
            && let Some(rejected) = &inner.rejected
            && let Ok(mut r) = rejected.lock()
        {
            r.add(index, reason);
        }
    }

    /// For sources that need no acknowledgement (files, generators).
    pub fn none() -> Ack {
        Ack(None)
    }

    /// Record that the events this clone stands for were not delivered.
    pub fn fail(&self, reason: impl Into<String>) {
        if let Some(inner) = &self.0
            && let Ok(mut f) = inner.failure.lock()
            && f.is_none()
        {
            *f = Some(reason.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_when_last_clone_drops() {
        let (ack, waiter) = Ack::new();
        let a = ack.clone();
        drop(ack);
        let handle = tokio::spawn(waiter.wait());
        tokio::task::yield_now().await;
        assert!(!handle.is_finished());
        drop(a);
        assert_eq!(handle.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn reporting_acks_collect_rejections() {
        let (ack, waiter) = Ack::reporting();
        for i in 0..Rejected::LISTED + 5 {
            ack.clone().reject(i, "bad");
        }
        drop(ack);
        let r = waiter.report().await.unwrap();
        assert_eq!(
            (r.count, r.listed.len(), r.listed[3].clone()),
            (Rejected::LISTED + 5, Rejected::LISTED, (3, "bad".into()))
        );
        // A plain ack keeps nothing.
        let (ack, waiter) = Ack::new();
        ack.reject(0, "bad");
        drop(ack);
        assert_eq!(waiter.report().await, Ok(Rejected::default()));
    }

    #[tokio::test]
    async fn reports_failure() {
        let (ack, waiter) = Ack::new();
        let a = ack.clone();
        a.fail("sink down");
        drop((ack, a));
        assert_eq!(waiter.wait().await, Err("sink down".into()));
    }
}
