//! Running a task graph: build the connectors, wire the bounded channels, spawn the tasks, and
//! drain everything in order on shutdown (sources stop → workers finish their batches → sinks
//! write and flush what they hold).

use crate::EngineCatalog;
use crate::connectors::{self, ConnectorError, Sink, Source, SourceContext, WriteError};
use crate::exec::ack::Ack;
use crate::exec::batch::{DeadLetter, RawBatch, SinkBatch};
use crate::exec::decode::Decoder;
use crate::exec::pipeline::{Emit, Pipeline, dead_letter_batch};
use crate::metrics::{Metrics, NodeStats};
use crate::options::{OptionError, Options, Settings};
use crate::taskgraph::{TaskGraph, raw_queue};
use arrow::array::Array;
use arrow_schema::SchemaRef;
use backon::{BackoffBuilder, ExponentialBuilder};
use phoenix_dsl::catalog::{Catalog, Role};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Batches waiting in front of each sink.
pub const SINK_QUEUE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error("{node}: {error}")]
    Connector { node: String, error: ConnectorError },
    #[error("{0}")]
    Internal(String),
}

/// How to run a flow.
pub struct RunConfig {
    /// Decode-and-process tasks per source.
    pub workers: usize,
    pub settings: Settings,
    /// Sources to use instead of the flow's connectors, by source name (for `phoenix test`).
    pub sources: HashMap<String, Box<dyn Source>>,
    /// Sinks to use instead of the flow's connectors, by sink name.
    pub sinks: HashMap<String, Box<dyn Sink>>,
    /// Cancel to stop the flow gracefully.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunConfig").field("workers", &self.workers).finish_non_exhaustive()
    }
}

impl RunConfig {
    pub fn new(workers: usize) -> RunConfig {
        RunConfig {
            workers: workers.max(1),
            settings: Settings::default(),
            sources: HashMap::new(),
            sinks: HashMap::new(),
            shutdown: CancellationToken::new(),
        }
    }
}

/// The default number of workers per source: one per core, less one for the source and sink
/// tasks' I/O (measured with `phoenix bench` on 2 cores: 1 worker 699k events/s, 2 workers 606k,
/// 4 workers 474k — extra workers only contend).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// The retry policy every sink shares (options `max_attempts`, `backoff_min`, `backoff_max`).
#[derive(Debug, Clone)]
struct Retry {
    max_attempts: u64,
    min: Duration,
    max: Duration,
}

impl Retry {
    fn from(o: &Options) -> Retry {
        Retry {
            max_attempts: o.int("max_attempts").unwrap_or(10).max(0) as u64,
            min: o.duration("backoff_min").unwrap_or(Duration::from_millis(100)),
            max: o.duration("backoff_max").unwrap_or(Duration::from_secs(30)),
        }
    }

    fn delays(&self) -> backon::ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max.max(self.min))
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Run the flow until its sources end or `config.shutdown` is cancelled, then drain.
pub async fn run(
    graph: TaskGraph,
    catalog: &EngineCatalog,
    metrics: Arc<Metrics>,
    mut config: RunConfig,
) -> Result<(), RunError> {
    let settings = config.settings.clone();
    let shutdown = config.shutdown.clone();
    // Build every connector before starting anything, so a bad option or path stops the flow
    // before it reads a single event.
    // Sources first: a source that cannot start (a port in use) must not let a sink truncate
    // its output file first.
    let mut sources = Vec::new();
    for s in &graph.sources {
        let spec = catalog
            .connector(&s.connector, Role::Source)
            .ok_or_else(|| RunError::Internal(format!("unknown source connector {}", s.connector)))?;
        let (source, options) = match config.sources.remove(&s.name) {
            Some(x) => (x, Options::defaults(&s.name, spec)),
            None => {
                let options = Options::resolve(&s.name, spec, &s.options, &settings)?;
                let source = connectors::build_source(&s.connector, &options)
                    .map_err(|error| RunError::Connector { node: s.title.clone(), error })?;
                (source, options)
            }
        };
        sources.push((source, options));
    }

    let mut sinks = Vec::new();
    for k in &graph.sinks {
        let spec = catalog
            .connector(&k.connector, Role::Sink)
            .ok_or_else(|| RunError::Internal(format!("unknown sink connector {}", k.connector)))?;
        let (sink, options) = match config.sinks.remove(&k.name) {
            Some(s) => (s, Options::defaults(&k.name, spec)),
            None => {
                let options = Options::resolve(&k.name, spec, &k.options, &settings)?;
                let sink = connectors::build_sink(&k.connector, &options)
                    .map_err(|error| RunError::Connector { node: k.title.clone(), error })?;
                (sink, options)
            }
        };
        sinks.push((sink, Retry::from(&options)));
    }
    let (sink_tx, sink_rx): (Vec<_>, Vec<_>) =
        graph.sinks.iter().map(|_| mpsc::channel::<SinkBatch>(SINK_QUEUE)).unzip();
    // Each task holds senders only for the sinks it can reach, so a sink's queue closes once
    // everything upstream of it is done.
    let senders_for = |p: &Pipeline, extra: &[&Pipeline]| -> Senders {
        let mut used = Vec::new();
        p.sinks(&mut used);
        extra.iter().for_each(|e| e.sinks(&mut used));
        Senders((0..sink_tx.len()).map(|i| used.contains(&i).then(|| sink_tx[i].clone())).collect())
    };

    let mut source_tasks = JoinSet::new();
    let mut workers = JoinSet::new();
    for (plan, (source, options)) in graph.sources.iter().zip(sources) {
        let stats = metrics.nodes[plan.node.index()].clone();
        let (tx, rx) = mpsc::channel::<RawBatch>(raw_queue(config.workers));
        let ctx =
            SourceContext::new(plan.name.clone(), plan.stream.clone(), options, tx, shutdown.clone(), stats.clone())
                .map_err(|error| RunError::Connector { node: plan.title.clone(), error })?;
        let title = plan.title.clone();
        source_tasks
            .spawn(async move { source.run(ctx).await.map_err(|error| RunError::Connector { node: title, error }) });
        let rx = Arc::new(Mutex::new(rx));
        let logged = Arc::new(AtomicU64::new(0));
        for _ in 0..config.workers {
            let w = Worker {
                decoder: plan.decoder.clone(),
                out: plan.out.clone(),
                errors: plan.errors.clone(),
                errors_schema: plan.errors_schema.clone(),
                senders: senders_for(&plan.out, &[&plan.errors]),
                stats: stats.clone(),
                logged: logged.clone(),
            };
            workers.spawn(w.run(rx.clone()));
        }
    }
    let mut sink_tasks = JoinSet::new();
    for ((plan, (sink, retry)), rx) in graph.sinks.iter().zip(sinks).zip(sink_rx) {
        let runner = SinkRunner {
            title: plan.title.clone(),
            sink,
            retry,
            errors: plan.errors.clone(),
            errors_schema: plan.errors_schema.clone(),
            senders: senders_for(&plan.errors, &[]),
            stats: metrics.nodes[plan.node.index()].clone(),
            shutdown: shutdown.clone(),
        };
        sink_tasks.spawn(runner.run(rx));
    }
    drop(sink_tx);

    let mut first_error = None;
    while let Some(r) = source_tasks.join_next().await {
        let r = r.map_err(|e| RunError::Internal(format!("source task failed: {e}"))).and_then(|r| r);
        if let Err(e) = r {
            error!("{e}");
            // One source failing stops the flow: the others drain and stop too.
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    while let Some(r) = workers.join_next().await {
        if let Err(e) = r {
            first_error.get_or_insert(RunError::Internal(format!("worker failed: {e}")));
        }
    }
    while let Some(r) = sink_tasks.join_next().await {
        if let Err(e) = r {
            first_error.get_or_insert(RunError::Internal(format!("sink task failed: {e}")));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Sink queues a task may send to, by sink index.
struct Senders(Vec<Option<mpsc::Sender<SinkBatch>>>);

impl Senders {
    async fn send(&self, emit: Emit) {
        for (i, batch) in emit.sinks {
            let ack = batch.ack.clone();
            let sent = match &self.0[i] {
                Some(tx) => tx.send(batch).await.is_ok(),
                None => false,
            };
            if !sent {
                ack.fail("the sink stopped before the events reached it");
            }
        }
    }
}

/// Decodes raw batches and runs the source's fused pipelines.
struct Worker {
    decoder: Arc<Decoder>,
    out: Arc<Pipeline>,
    errors: Arc<Pipeline>,
    errors_schema: SchemaRef,
    senders: Senders,
    stats: Arc<NodeStats>,
    /// Dead letters logged for this source (shared by its workers), to keep logs readable.
    logged: Arc<AtomicU64>,
}

impl Worker {
    async fn run(self, rx: Arc<Mutex<mpsc::Receiver<RawBatch>>>) {
        loop {
            let raw = rx.lock().await.recv().await;
            let Some(raw) = raw else { return };
            let (batch, mut dead) = self.decoder.decode(&raw);
            self.stats.errors.inc_by(dead.len() as u64);
            let mut emit = Emit::default();
            if let Some(b) = batch {
                self.stats.events_out.inc_by(b.num_rows() as u64);
                self.out.push(&b, &raw.ack, &mut emit);
            }
            dead.append(&mut emit.dead);
            route_dead(dead, &self.errors, &self.errors_schema, &raw.ack, &mut emit, &self.stats, &self.logged);
            self.senders.send(emit).await;
        }
    }
}

/// Send dead letters down an `.errors` pipeline, or count and log them when none is wired.
fn route_dead(
    dead: Vec<DeadLetter>,
    errors: &Pipeline,
    schema: &SchemaRef,
    ack: &Ack,
    emit: &mut Emit,
    stats: &NodeStats,
    logged: &AtomicU64,
) {
    if dead.is_empty() {
        return;
    }
    if errors.is_empty() {
        unhandled(&dead, stats, logged);
        return;
    }
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    match dead_letter_batch(&dead, schema, now) {
        Ok(batch) => {
            let mut inner = Emit::default();
            errors.push(&batch, ack, &mut inner);
            emit.sinks.append(&mut inner.sinks);
            // A dead letter that fails on its own `.errors` path is not sent round again.
            unhandled(&inner.dead, stats, logged);
        }
        Err(e) => {
            error!("cannot build dead letters: {e}");
            unhandled(&dead, stats, logged);
        }
    }
}

/// The first few failures of a node are logged one by one, then one in a thousand.
fn unhandled(dead: &[DeadLetter], stats: &NodeStats, logged: &AtomicU64) {
    for d in dead {
        stats.unhandled.inc();
        let n = logged.fetch_add(1, Ordering::Relaxed);
        if n < 10 || n.is_multiple_of(1000) {
            let payload = String::from_utf8_lossy(&d.payload);
            let short: String = payload.chars().take(200).collect();
            warn!(node = %d.node, error = %d.error, payload = %short, unhandled = n + 1,
                "event failed and `.errors` is not wired; counted in phoenix_unhandled_errors_total");
        }
    }
}

/// Owns one sink: writes batches in order, retries with backoff, dead-letters what cannot be
/// written, acknowledges (by dropping) what was flushed.
struct SinkRunner {
    title: String,
    sink: Box<dyn Sink>,
    retry: Retry,
    errors: Arc<Pipeline>,
    errors_schema: SchemaRef,
    senders: Senders,
    stats: Arc<NodeStats>,
    shutdown: CancellationToken,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Write(usize),
    Flush,
}

/// How many queued batches a sink writes before one flush.
const SINK_GROUP: usize = 32;

impl SinkRunner {
    async fn run(mut self, mut rx: mpsc::Receiver<SinkBatch>) {
        let logged = AtomicU64::new(0);
        let mut group = Vec::with_capacity(SINK_GROUP);
        while let Some(first) = rx.recv().await {
            group.push(first);
            while group.len() < SINK_GROUP {
                match rx.try_recv() {
                    Ok(b) => group.push(b),
                    Err(_) => break,
                }
            }
            // Batches whose write succeeded; only these depend on the flush.
            let mut written = Vec::with_capacity(group.len());
            for i in 0..group.len() {
                self.stats.events_in.inc_by(group[i].len() as u64);
                match self.attempt(&group, Step::Write(i)).await {
                    Ok(()) => written.push(i),
                    Err((error, attempts)) => self.dead_letter(&group[i], error, attempts, &logged).await,
                }
            }
            match self.attempt(&group, Step::Flush).await {
                Ok(()) => {
                    self.stats.events_out.inc_by(written.iter().map(|&i| group[i].len() as u64).sum());
                }
                Err((error, attempts)) => {
                    for &i in &written {
                        self.dead_letter(&group[i], error.clone(), attempts, &logged).await;
                    }
                }
            }
            // Dropping the batches acknowledges them.
            group.clear();
        }
    }

    /// Try a write or flush until it succeeds or the policy gives up; `Err` carries the last
    /// error and the number of attempts.
    async fn attempt(&mut self, group: &[SinkBatch], step: Step) -> Result<(), (WriteError, u64)> {
        let mut delays = self.retry.delays();
        let mut attempts = 0;
        let mut warned_stuck = false;
        loop {
            attempts += 1;
            let result = match step {
                Step::Write(i) => self.sink.write(&group[i]).await,
                Step::Flush => self.sink.flush().await,
            };
            let error = match result {
                Ok(()) => return Ok(()),
                Err(e @ WriteError::Fatal(_)) => return Err((e, attempts)),
                Err(e) => e,
            };
            self.stats.retries.inc();
            let exhausted = self.retry.max_attempts > 0 && attempts >= self.retry.max_attempts;
            if exhausted && !self.errors.is_empty() {
                return Err((error, attempts));
            }
            if self.shutdown.is_cancelled() && (exhausted || attempts >= 3) {
                // Stopping and the sink is still down: report, don't hang.
                return Err((error, attempts));
            }
            let delay = delays.next().unwrap_or(self.retry.max);
            if exhausted && !warned_stuck {
                warned_stuck = true;
                error!(sink = %self.title, attempts, %error,
                    "retries exhausted and `.errors` is not wired: holding the events and retrying \
                     (sources are slowed, nothing is dropped); wire `.errors` to dead-letter them");
            } else {
                warn!(sink = %self.title, attempt = attempts, %error, retry_in = ?delay, "write failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.cancelled(), if !self.shutdown.is_cancelled() => {}
            }
        }
    }

    async fn dead_letter(&mut self, b: &SinkBatch, error: WriteError, attempts: u64, logged: &AtomicU64) {
        let dead: Vec<DeadLetter> = (0..b.payloads.len())
            .map(|i| DeadLetter {
                error: error.to_string(),
                node: self.title.clone(),
                payload: bytes::Bytes::copy_from_slice(b.payloads.value(i)),
                attempts: attempts as i64,
            })
            .collect();
        self.stats.errors.inc_by(dead.len() as u64);
        if self.errors.is_empty() {
            // Not written and nowhere to put it: the source must not consider it delivered.
            b.ack.fail(format!("{}: {error}", self.title));
            unhandled(&dead, &self.stats, logged);
            return;
        }
        let mut emit = Emit::default();
        route_dead(dead, &self.errors, &self.errors_schema, &b.ack, &mut emit, &self.stats, logged);
        self.senders.send(emit).await;
    }
}
