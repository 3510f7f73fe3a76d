//! Make-before-break replacement of a running flow: the one implementation behind a PUT of
//! `phoenix serve` (`api::flows`) and a reload of `phoenix run` (`cli`).
//!
//! 1. The new version is planned and every connector of it built and opened
//!    ([`run::prepare`]) while the old version runs. A connector that cannot start (a port
//!    another flow holds, an input that is missing) leaves the old version untouched.
//! 2. The new version starts, and both run side by side for a moment:
//!    - an `http` source of the new version took over the old one's listening socket when it
//!      was built (`connectors::http::listener`: one socket per address in the process, owned
//!      by the flow, not by a version of it), and from its start each new request goes to the
//!      new version; a request is served by one version or the other and no connection is
//!      refused or closed;
//!    - file sinks of both versions on one path share one handle and write whole lines under
//!      one lock (`connectors::file::sink`), so lines never interleave;
//!    - a Kafka source of the new version joins the same consumer group; the rebalance makes
//!      the old one commit what was delivered, and whoever is assigned a partition reads it
//!      from the committed offset (the only duplicates are the old version's unacknowledged
//!      batches, the replay window).
//! 3. Once every source and sink of the new version reached its service (or [`START_WAIT`]
//!    passed), `/ready` follows the new version and the old one drains exactly as on SIGTERM:
//!    its sources stop taking events, everything it took is written and acknowledged.
//!
//! A new version that ends with an error before it is up (its Kafka subscription refused, say)
//! is not swapped in: the old version keeps running.

use crate::EngineCatalog;
use crate::observability::metrics::Metrics;
use crate::observability::readiness::Readiness;
use crate::run::{self, RunConfig, RunError};
use crate::taskgraph::{PlanError, TaskGraph, node_labels};
use phoenix_dsl::plan::Plan;
use phoenix_dsl::span::SourceMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a new version may take to reach its services before the old one drains anyway
/// (a broker that is down must not keep two versions running forever).
pub const START_WAIT: Duration = Duration::from_secs(10);

/// How a version ended: shared, since both the swap and whoever reports status wait for it.
pub type Outcome = Result<(), Arc<RunError>>;

/// Why a version could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Run(#[from] RunError),
    /// It started, then ended with an error before it was up.
    #[error("{0}")]
    Failed(Arc<RunError>),
}

/// One running version of a flow.
#[derive(Debug)]
pub struct Generation {
    shutdown: CancellationToken,
    outcome: watch::Receiver<Option<Outcome>>,
    pub metrics: Arc<Metrics>,
    /// Its sources' and sinks' readiness; a child of the process's once it is the version in
    /// service.
    pub readiness: Readiness,
}

/// Plan `plan`, build and open its connectors, and start it, with counters beside `root`'s.
/// `config.readiness` is replaced by the version's own. `running` is the version it is to
/// replace, whose series stay in `/metrics` if this one cannot start.
pub fn launch(
    plan: &Plan,
    sources: &SourceMap,
    catalog: &Arc<EngineCatalog>,
    root: &Metrics,
    running: Option<&Metrics>,
    mut config: RunConfig,
) -> Result<Generation, LaunchError> {
    let metrics = Arc::new(root.sibling(node_labels(plan, sources)));
    let forget = |m: &Metrics| match running {
        Some(keep) => m.forget_except(keep),
        None => m.forget(),
    };
    let graph = TaskGraph::build(plan, sources, &metrics).inspect_err(|_| forget(&metrics))?;
    let readiness = Readiness::new();
    config.readiness = readiness.clone();
    let shutdown = config.shutdown.clone();
    let prepared = run::prepare(graph, catalog, metrics.clone(), config).inspect_err(|_| forget(&metrics))?;
    let (tx, outcome) = watch::channel(None);
    tokio::spawn(async move {
        let result = prepared.run().await.map_err(Arc::new);
        let _ = tx.send(Some(result));
    });
    Ok(Generation { shutdown, outcome, metrics, readiness })
}

impl Generation {
    /// How it ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome.borrow().clone()
    }

    /// A receiver of its outcome, for whoever reports its status.
    pub fn outcomes(&self) -> watch::Receiver<Option<Outcome>> {
        self.outcome.clone()
    }

    /// Wait until it ends (on its own, or drained).
    pub async fn finished(&self) -> Outcome {
        wait(self.outcome.clone()).await
    }

    /// Wait on a receiver from [`outcomes`](Self::outcomes) until the version ends.
    pub async fn wait_outcome(rx: watch::Receiver<Option<Outcome>>) -> Outcome {
        wait(rx).await
    }

    /// Wait until its tasks are all started (or it ended, or `limit` passed), so a source
    /// that fails at once is known.
    pub async fn started(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline && self.outcome().is_none() && self.readiness.waiting().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait until every source and sink reached its service, it ended, or `limit` passed.
    pub async fn up(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline && self.outcome().is_none() {
            if self.readiness.waiting().is_some_and(|w| w.is_empty()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Drain it as on SIGTERM and wait until it has stopped; its readiness leaves `parent`
    /// and its counters `/metrics`, except those `keep` (its successor) counts on.
    pub async fn stop(self, parent: &Readiness, keep: Option<&Metrics>) -> Outcome {
        self.shutdown.cancel();
        let outcome = self.finished().await;
        self.retire(parent, keep);
        outcome
    }

    /// Forget a version that has ended.
    pub fn retire(&self, parent: &Readiness, keep: Option<&Metrics>) {
        parent.remove_child(&self.readiness);
        match keep {
            Some(keep) => self.metrics.forget_except(keep),
            None => self.metrics.forget(),
        }
    }
}

async fn wait(mut rx: watch::Receiver<Option<Outcome>>) -> Outcome {
    loop {
        if let Some(o) = rx.borrow_and_update().clone() {
            return o;
        }
        if rx.changed().await.is_err() {
            // The task went away without a word: it panicked.
            return Err(Arc::new(RunError::Internal("the flow task failed".into())));
        }
    }
}

/// Swap `next` (just launched) in for `old`: wait until `next` is up, make it the version in
/// service under `parent`, then drain `old`. `Ok` with `next` and how `old` ended; `Err` with
/// `old` still running when `next` ended with an error before it was up.
pub async fn replace(
    old: Generation,
    next: Generation,
    parent: &Readiness,
) -> Result<(Generation, Outcome), (Generation, LaunchError)> {
    next.up(START_WAIT).await;
    if let Some(Err(e)) = next.outcome() {
        next.retire(parent, Some(&old.metrics));
        return Err((old, LaunchError::Failed(e)));
    }
    parent.add_child(next.readiness.clone());
    parent.remove_child(&old.readiness);
    let outcome = old.stop(parent, Some(&next.metrics)).await;
    Ok((next, outcome))
}
