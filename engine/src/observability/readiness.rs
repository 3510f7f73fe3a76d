//! Whether a running flow can do its work: every source and sink has reached its service.
//! `/ready` answers from it (a Kubernetes readiness probe: a rolling update stops an old pod
//! only once the new one is ready), and [`Throttled`] keeps a connector that cannot reach its
//! service to one log line at a time.
//!
//! A node is *connected* once, when it first reaches its service (a Kafka consumer got its
//! partitions, a producer read the cluster's metadata, an HTTP listener is bound, a file is
//! open, the first SQS receive or Elasticsearch request answered); a later outage does not
//! make the pod unready, because every replica would then be dropped at once, and the sinks'
//! retries and the bounded queues already hold the flow back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One node's flag. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Connected(Arc<AtomicBool>);

impl Connected {
    /// A flag that is already set (a connector with no service to reach).
    pub fn already() -> Connected {
        Connected(Arc::new(AtomicBool::new(true)))
    }

    /// The node has reached its service; idempotent.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Every source and sink of a flow with its flag. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Every node is registered: until then the flow is starting.
    started: bool,
    nodes: Vec<(String, Connected)>,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new flag for `node` (its title, `source orders (kafka)`), not set.
    pub fn register(&self, node: &str) -> Connected {
        let flag = Connected::default();
        self.lock().nodes.push((node.to_string(), flag.clone()));
        flag
    }

    /// Every node is registered.
    pub fn started(&self) {
        self.lock().started = true;
    }

    /// `None` while the flow is starting; else the nodes not connected yet, in flow order.
    pub fn waiting(&self) -> Option<Vec<String>> {
        let s = self.lock();
        s.started.then(|| s.nodes.iter().filter(|(_, f)| !f.is_set()).map(|(n, _)| n.clone()).collect())
    }
}

/// How often a connector that keeps failing the same way may log.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// A connector's complaints about its service, at most one line per [`LOG_EVERY`]: the first
/// at once, then the latest of each window with how many were left out. A flow whose broker is
/// down says so once every 30 s, not dozens of times a second.
#[derive(Debug)]
pub struct Throttled {
    every: Duration,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    pub fn new(every: Duration) -> Throttled {
        Throttled { every, state: Mutex::new(Window::default()) }
    }

    /// Whether to log now, and how many were suppressed since the last line.
    pub fn admit(&self) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match w.last {
            Some(t) if t.elapsed() < self.every => {
                w.suppressed += 1;
                None
            }
            _ => {
                w.last = Some(Instant::now());
                Some(std::mem::take(&mut w.suppressed))
            }
        }
    }

    /// `message`, and what was left out before it, or `None` inside a window.
    pub fn line(&self, message: impl std::fmt::Display) -> Option<String> {
        let suppressed = self.admit()?;
        Some(if suppressed == 0 {
            message.to_string()
        } else {
            format!(
                "{message} ({suppressed} similar message{} in the last {:?} not shown)",
                plural(suppressed),
                self.every
            )
        })
    }
}

impl Default for Throttled {
    fn default() -> Throttled {
        Throttled::new(LOG_EVERY)
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_then_waiting_for_the_unconnected() {
        let r = Readiness::new();
        let a = r.register("source a (kafka)");
        let _b = r.register("sink b (kafka)");
        assert_eq!(r.waiting(), None, "starting until every node is registered");
        r.started();
        assert_eq!(r.waiting(), Some(vec!["source a (kafka)".to_string(), "sink b (kafka)".to_string()]));
        a.set();
        a.set();
        assert_eq!(r.waiting(), Some(vec!["sink b (kafka)".to_string()]));
    }

    #[test]
    fn one_line_per_window_with_the_count_left_out() {
        let t = Throttled::new(Duration::from_millis(200));
        assert_eq!(t.line("down").as_deref(), Some("down"));
        assert_eq!(t.line("down"), None);
        assert_eq!(t.line("down"), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            t.line("still down").as_deref(),
            Some("still down (2 similar messages in the last 200ms not shown)")
        );
        assert_eq!(t.line("x"), None);
    }
}
