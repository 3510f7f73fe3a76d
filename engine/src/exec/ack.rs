//! Acknowledgements: a source learns when every event of a batch it emitted is handled.
//!
//! An [`Ack`] travels with a batch and every piece cut from it (filtered, routed, fanned out to
//! several sinks). When the last clone is dropped the source's [`AckWaiter`] resolves: with
//! `Ok` if every holder was done with it (a sink wrote it, a filter dropped it, a dead letter
//! was written), or with the first failure a holder reported via [`Ack::fail`] (for instance a
//! sink that shut down before it could write). A crash resolves nothing, so a source that
//! waits before committing its position replays what was not acknowledged.

use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Default)]
pub struct Ack(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    tx: Mutex<Option<oneshot::Sender<Result<(), String>>>>,
    failure: Mutex<Option<String>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tx = self.tx.get_mut().map(Option::take).unwrap_or(None);
        if let Some(tx) = tx {
            let failure = self.failure.get_mut().map(Option::take).unwrap_or(None);
            // The source may have stopped waiting; nothing to tell then.
            let _ = tx.send(failure.map_or(Ok(()), Err));
        }
    }
}

/// Resolves when every clone of the matching [`Ack`] is gone.
#[derive(Debug)]
pub struct AckWaiter(oneshot::Receiver<Result<(), String>>);

impl AckWaiter {
    pub async fn wait(self) -> Result<(), String> {
        self.0.await.unwrap_or_else(|_| Err("acknowledgement lost".into()))
    }
}

impl Ack {
    /// A tracked acknowledgement and the waiter that learns its outcome.
    pub fn new() -> (Ack, AckWaiter) {
        let (tx, rx) = oneshot::channel();
        (Ack(Some(Arc::new(Inner { tx: Mutex::new(Some(tx)), failure: Mutex::new(None) }))), AckWaiter(rx))
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
    async fn reports_failure() {
        let (ack, waiter) = Ack::new();
        let a = ack.clone();
        a.fail("sink down");
        drop((ack, a));
        assert_eq!(waiter.wait().await, Err("sink down".into()));
    }
}
