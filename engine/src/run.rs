//! Running a task graph: build the connectors, wire the bounded channels, spawn the tasks, and
//! drain everything in order on shutdown (sources stop → workers finish their batches → sinks
//! write and flush what they hold).

use crate::EngineCatalog;
use crate::connectors::{
    self, Batching, ConnectorError, Flushing, ItemFailure, PartialFailure, Sink, Source, SourceContext, WriteError,
};
use crate::exec::ack::Ack;
use crate::exec::batch::{DeadLetter, RawBatch, SinkBatch};
use crate::exec::decode::Decoder;
use crate::exec::pipeline::{Emit, Pipeline, dead_letter_batch};
use crate::observability::metrics::{Metrics, NodeStats};
use crate::observability::readiness::{Connected, Readiness};
use crate::options::{OptionError, Options, Settings};
use crate::taskgraph::{TaskGraph, raw_queue};
use arrow::array::{Array, BinaryArray, UInt32Array};
use arrow_schema::SchemaRef;
use phoenix_dsl::catalog::{Catalog, Role};
use std::collections::{HashMap, VecDeque};
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
    /// Where each source and sink reports that it reached its service (`/ready`).
    pub readiness: Readiness,
    /// The flow this graph is a version of: an `http` source takes over the socket of another
    /// version of the same flow (make-before-break, `crate::swap`), and only of that flow.
    /// Unique per `RunConfig` unless set.
    pub owner: connectors::Owner,
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
            readiness: Readiness::new(),
            owner: connectors::Owner::unique(),
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

    /// The delay before attempt `attempt + 1` of events tried `attempt` times.
    ///
    /// "Equal jitter" under a doubling ceiling: the ceiling is `backoff_min · 2^attempt`, capped
    /// at `backoff_max`, and the delay is drawn uniformly from its upper half, never below
    /// `backoff_min`. So every delay lies within [`backoff_min`, `backoff_max`] — the cap is
    /// applied after the jitter, not before (backon's `with_jitter` adds up to the capped delay
    /// again, which let a 1 s cap wait 1.9 s) — and, below the cap, each range starts where the
    /// one before it ends, so delays grow; at the cap they are still spread (over its upper
    /// half, which may overlap the range before it).
    /// Full jitter (0 to the ceiling) would spread them further but may retry at once, which a
    /// service that just answered 429 does not want, and `backoff_min` is documented as a floor.
    fn delay(&self, attempt: u64) -> Duration {
        let max = self.max.max(self.min);
        // 2^31 · any `backoff_min` of a millisecond or more is already past any useful cap.
        let ceiling = self.min.saturating_mul(1u32 << attempt.clamp(1, 31)).min(max);
        let floor = (ceiling / 2).max(self.min);
        floor + (ceiling - floor).mul_f64(fastrand::f64())
    }
}

/// Run the flow until its sources end or `config.shutdown` is cancelled, then drain.
pub async fn run(
    graph: TaskGraph,
    catalog: &EngineCatalog,
    metrics: Arc<Metrics>,
    config: RunConfig,
) -> Result<(), RunError> {
    prepare(graph, catalog, metrics, config)?.run().await
}

/// A flow whose connectors are built and opened (files open, ports bound, consumers
/// configured) and nothing yet started: a replacement is prepared while the flow it replaces
/// still runs, so a connector that cannot start leaves that flow untouched.
pub struct Prepared {
    graph: TaskGraph,
    metrics: Arc<Metrics>,
    config: RunConfig,
    sources: Vec<(Box<dyn Source>, Options)>,
    sinks: Vec<(Box<dyn Sink>, Retry)>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Build every connector of `graph`, starting nothing.
pub fn prepare(
    graph: TaskGraph,
    catalog: &EngineCatalog,
    metrics: Arc<Metrics>,
    mut config: RunConfig,
) -> Result<Prepared, RunError> {
    let settings = config.settings.clone();
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
                let source = connectors::build_source(&s.connector, &options, &config.owner)
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
    Ok(Prepared { graph, metrics, config, sources, sinks })
}

impl Prepared {
    /// Start the tasks and run until the sources end or `config.shutdown` is cancelled, then
    /// drain.
    pub async fn run(self) -> Result<(), RunError> {
        let Prepared { graph, metrics, config, sources, sinks } = self;
        let shutdown = config.shutdown.clone();
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
            let ctx = SourceContext::new(
                plan.name.clone(),
                plan.stream.clone(),
                options,
                tx,
                shutdown.clone(),
                stats.clone(),
            )
            .map_err(|error| RunError::Connector { node: plan.title.clone(), error })?
            .with_metadata_read(plan.decoder.metadata_read())
            .with_connected(config.readiness.register(&plan.title));
            let title = plan.title.clone();
            source_tasks.spawn(async move {
                source.run(ctx).await.map_err(|error| RunError::Connector { node: title, error })
            });
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
        let mut probes = Vec::new();
        for ((plan, (sink, retry)), rx) in graph.sinks.iter().zip(sinks).zip(sink_rx) {
            let connected = config.readiness.register(&plan.title);
            // A sink that reaches a service says when it has; the first accepted flush says so too.
            let probe = match sink.connected() {
                Some(reached) => {
                    let connected = connected.clone();
                    Some(tokio::spawn(async move {
                        reached.await;
                        connected.set();
                    }))
                }
                None => {
                    connected.set();
                    None
                }
            };
            probes.extend(probe);
            let runner = SinkRunner {
                connected,
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
        config.readiness.started();

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
        probes.iter().for_each(tokio::task::JoinHandle::abort);
        first_error.map_or(Ok(()), Err)
    }
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

/// Owns one sink: gathers its input into groups (the sink's [`Batching`]), writes and flushes
/// each group, retries what failed with backoff, dead-letters what cannot be written, and
/// acknowledges (by dropping) what was flushed.
///
/// A failure can be whole (the write or flush as a unit: it is tried again as it is) or partial
/// (some events of a flush, [`WriteError::Partial`]): then the failed events are cut out of
/// their batches (sharing the batch's acknowledgement), the fatal ones are dead-lettered with
/// their own error, and the retryable ones are written again on their own after a backoff, each
/// with its own attempt count. A source position is acknowledged once each of its events is
/// flushed or dead-lettered.
struct SinkRunner {
    title: String,
    /// Set by the first flush the service accepted (if the sink's probe did not set it before).
    connected: Connected,
    sink: Box<dyn Sink>,
    retry: Retry,
    errors: Arc<Pipeline>,
    errors_schema: SchemaRef,
    senders: Senders,
    stats: Arc<NodeStats>,
    shutdown: CancellationToken,
}

#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Write(&'a SinkBatch),
    Flush,
}

/// Events on their way into the sink, how many times the sink was given them, and why the last
/// time failed.
struct Part {
    batch: SinkBatch,
    attempts: u64,
    error: String,
}

/// How a write or flush failed once its whole-step retries are over.
enum Failure {
    /// The step as a whole: its last error and how many times it was tried.
    Whole(WriteError, u64),
    /// Some of its events; the sink holds none of them.
    Partial(PartialFailure),
}

/// Flushes a sink may have in flight at once ([`Sink::begin_flush`]): enough to keep writing
/// while the service confirms, few enough to bound what is held.
const FLUSHES_IN_FLIGHT: usize = 4;

/// A group whose flush runs on its own; its parts are held (and so not acknowledged) until it
/// is settled.
struct InFlight {
    written: Vec<Part>,
    flushing: Flushing,
}

/// What came first while waiting for input.
enum Next {
    Flushed(Result<(), WriteError>),
    Input(Option<SinkBatch>),
}

impl SinkRunner {
    async fn run(mut self, mut rx: mpsc::Receiver<SinkBatch>) {
        let logged = AtomicU64::new(0);
        let shape = self.sink.batching();
        let mut carry = None;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        loop {
            // The next input; flushes that finish meanwhile are settled, oldest first.
            let first = loop {
                let Some(oldest) = in_flight.front_mut() else {
                    break next_batch(&mut rx, &mut carry, &self.stats).await;
                };
                let next = tokio::select! {
                    biased;
                    r = &mut oldest.flushing => Next::Flushed(r),
                    b = next_batch(&mut rx, &mut carry, &self.stats) => Next::Input(b),
                };
                match next {
                    Next::Flushed(result) => {
                        let done = in_flight.pop_front().expect("the oldest flush is in flight");
                        self.finish(done.written, result, &logged).await;
                    }
                    Next::Input(b) => break b,
                }
            };
            let Some(first) = first else { break };
            let group = gather(first, &mut rx, &shape, &mut carry, &self.stats).await;
            let parts = group.into_iter().map(|batch| Part { batch, attempts: 0, error: String::new() }).collect();
            let mut again = Vec::new();
            let written = self.write_parts(parts, &mut again, &logged).await;
            if !written.is_empty() {
                if in_flight.len() >= FLUSHES_IN_FLIGHT
                    && let Some(done) = in_flight.pop_front()
                {
                    // Settled, but its failures are written again only after this group's
                    // flush has begun: the sink holds this group now, and retried events must
                    // not join its epoch.
                    let result = background_outcome(done.flushing.await, &done.written);
                    self.settle_flush(done.written, result, &mut again, &logged).await;
                }
                match self.sink.begin_flush() {
                    Some(flushing) => in_flight.push_back(InFlight { written, flushing }),
                    None => {
                        let result = self.attempt(Step::Flush).await;
                        self.settle_flush(written, result, &mut again, &logged).await;
                    }
                }
            }
            self.retry(again, &logged).await;
        }
        while let Some(done) = in_flight.pop_front() {
            let result = done.flushing.await;
            self.finish(done.written, result, &logged).await;
        }
    }

    /// Write failed events again, after a backoff each time, until none is left.
    async fn retry(&mut self, mut parts: Vec<Part>, logged: &AtomicU64) {
        while !parts.is_empty() {
            self.pause(&parts).await;
            parts = self.round(parts, logged).await;
        }
    }

    /// Write every part, flush, and settle what failed; returns the events to write again.
    async fn round(&mut self, parts: Vec<Part>, logged: &AtomicU64) -> Vec<Part> {
        let mut again = Vec::new();
        let written = self.write_parts(parts, &mut again, logged).await;
        if !written.is_empty() {
            let result = match self.sink.begin_flush() {
                Some(flushing) => background_outcome(flushing.await, &written),
                None => self.attempt(Step::Flush).await,
            };
            self.settle_flush(written, result, &mut again, logged).await;
        }
        again
    }

    /// Write every part; returns what the sink holds afterwards, in write order (flush failures
    /// index into it). Events that failed are settled into `again` or dead-lettered.
    async fn write_parts(&mut self, parts: Vec<Part>, again: &mut Vec<Part>, logged: &AtomicU64) -> Vec<Part> {
        let mut written: Vec<Part> = Vec::with_capacity(parts.len());
        for part in parts {
            match self.attempt(Step::Write(&part.batch)).await {
                Ok(()) => written.push(part),
                Err(Failure::Whole(error, n)) => {
                    let rows = (0..part.batch.len()).map(|r| (r, error.to_string())).collect();
                    self.dead_letter(&part.batch, rows, part.attempts + n, logged).await;
                }
                Err(Failure::Partial(p)) => {
                    let mut failed = vec![false; part.batch.len()];
                    for i in &p.items {
                        if let Some(f) = failed.get_mut(i.index) {
                            *f = true;
                        }
                    }
                    let kept: Vec<usize> = (0..failed.len()).filter(|&r| !failed[r]).collect();
                    if !kept.is_empty() {
                        let batch = take_rows(&part.batch, &kept);
                        written.push(Part { batch, attempts: part.attempts, error: part.error.clone() });
                    }
                    self.settle(&part, p.items, again, logged).await;
                }
            }
        }
        written
    }

    /// Settle a flush that ran on its own, then write again what failed. Only while the sink
    /// holds nothing unflushed: retried events get a flush of their own.
    async fn finish(&mut self, written: Vec<Part>, result: Result<(), WriteError>, logged: &AtomicU64) {
        let result = background_outcome(result, &written);
        let mut again = Vec::new();
        self.settle_flush(written, result, &mut again, logged).await;
        self.retry(again, logged).await;
    }

    /// Count what a flush delivered; dead-letter or queue for another write what it did not.
    async fn settle_flush(
        &mut self,
        written: Vec<Part>,
        result: Result<(), Failure>,
        again: &mut Vec<Part>,
        logged: &AtomicU64,
    ) {
        let total: usize = written.iter().map(|p| p.batch.len()).sum();
        match result {
            Ok(()) => {
                self.connected.set();
                self.stats.events_out.inc_by(total as u64);
            }
            Err(Failure::Whole(error, n)) => {
                for part in &written {
                    let rows = (0..part.batch.len()).map(|r| (r, error.to_string())).collect();
                    self.dead_letter(&part.batch, rows, part.attempts + n, logged).await;
                }
            }
            Err(Failure::Partial(p)) => {
                // Map each failed position back to its part and row.
                let starts: Vec<usize> = written
                    .iter()
                    .scan(0, |at, part| {
                        let start = *at;
                        *at += part.batch.len();
                        Some(start)
                    })
                    .collect();
                let mut by_part: Vec<Vec<ItemFailure>> = vec![Vec::new(); written.len()];
                let mut seen = vec![false; total];
                for mut item in p.items {
                    if item.index >= total || std::mem::replace(&mut seen[item.index], true) {
                        error!(sink = %self.title, index = item.index, "the sink reported a failure for an event it was not given");
                        continue;
                    }
                    let k = starts.partition_point(|&s| s <= item.index) - 1;
                    item.index -= starts[k];
                    by_part[k].push(item);
                }
                let failed: usize = by_part.iter().map(Vec::len).sum();
                if failed < total {
                    self.connected.set();
                }
                self.stats.events_out.inc_by((total - failed) as u64);
                for (part, items) in written.iter().zip(by_part) {
                    if !items.is_empty() {
                        self.settle(part, items, again, logged).await;
                    }
                }
            }
        }
    }

    /// Decide the fate of the failed events of `part`: fatal ones and retryable ones whose
    /// attempts are used up (with `.errors` wired, or while stopping) are dead-lettered; the
    /// others are cut into a new part to write again.
    async fn settle(&mut self, part: &Part, items: Vec<ItemFailure>, again: &mut Vec<Part>, logged: &AtomicU64) {
        let attempts = part.attempts + 1;
        let exhausted = self.retry.max_attempts > 0 && attempts >= self.retry.max_attempts;
        let give_up =
            (exhausted && !self.errors.is_empty()) || (self.shutdown.is_cancelled() && (exhausted || attempts >= 3));
        let mut dead = Vec::new();
        let mut retry = Vec::new();
        let mut error = String::new();
        for item in items.into_iter().filter(|i| i.index < part.batch.len()) {
            if item.retryable && !give_up {
                retry.push(item.index);
                if error.is_empty() {
                    error = item.error;
                }
            } else {
                dead.push((item.index, item.error));
            }
        }
        if !retry.is_empty() {
            self.stats.retries.inc();
            again.push(Part { batch: take_rows(&part.batch, &retry), attempts, error });
        }
        if !dead.is_empty() {
            self.dead_letter(&part.batch, dead, attempts, logged).await;
        }
    }

    /// Wait before writing failed events again (shorter if the flow is stopping), and say why.
    async fn pause(&mut self, parts: &[Part]) {
        let attempts = parts.iter().map(|p| p.attempts).max().unwrap_or(1);
        let events: usize = parts.iter().map(|p| p.batch.len()).sum();
        let error = parts.iter().map(|p| p.error.as_str()).find(|e| !e.is_empty()).unwrap_or("");
        let delay = self.retry.delay(attempts);
        if self.retry.max_attempts > 0 && attempts >= self.retry.max_attempts {
            error!(sink = %self.title, events, attempts, %error,
                "retries exhausted and `.errors` is not wired: holding the events and retrying \
                 (sources are slowed, nothing is acknowledged or dropped); wire `.errors` to dead-letter them");
        } else {
            warn!(sink = %self.title, events, attempt = attempts, %error, retry_in = ?delay,
                "events failed; retrying them alone");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.shutdown.cancelled(), if !self.shutdown.is_cancelled() => {}
        }
    }

    /// Try a write or flush until it succeeds, fails partially, or the policy gives up on it.
    async fn attempt(&mut self, step: Step<'_>) -> Result<(), Failure> {
        let mut attempts = 0;
        let mut warned_stuck = false;
        loop {
            attempts += 1;
            let result = match step {
                Step::Write(batch) => self.sink.write(batch).await,
                Step::Flush => self.sink.flush().await,
            };
            let error = match result {
                Ok(()) => return Ok(()),
                Err(WriteError::Partial(p)) => return Err(Failure::Partial(p)),
                Err(e @ WriteError::Fatal(_)) => return Err(Failure::Whole(e, attempts)),
                Err(e) => e,
            };
            self.stats.retries.inc();
            let exhausted = self.retry.max_attempts > 0 && attempts >= self.retry.max_attempts;
            if exhausted && !self.errors.is_empty() {
                return Err(Failure::Whole(error, attempts));
            }
            if self.shutdown.is_cancelled() && (exhausted || attempts >= 3) {
                // Stopping and the sink is still down: report, don't hang.
                return Err(Failure::Whole(error, attempts));
            }
            let delay = self.retry.delay(attempts);
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

    /// Dead-letter rows of `b`, each with its error; without `.errors` the source is told they
    /// were not delivered.
    async fn dead_letter(&mut self, b: &SinkBatch, rows: Vec<(usize, String)>, attempts: u64, logged: &AtomicU64) {
        let Some(first) = rows.first().map(|(_, e)| e.clone()) else { return };
        let dead: Vec<DeadLetter> = rows
            .into_iter()
            .map(|(r, error)| DeadLetter {
                error,
                node: self.title.clone(),
                payload: bytes::Bytes::copy_from_slice(b.payloads.value(r)),
                attempts: attempts as i64,
            })
            .collect();
        self.stats.errors.inc_by(dead.len() as u64);
        if self.errors.is_empty() {
            // Not written and nowhere to put it: the source must not consider it delivered.
            b.ack.fail(format!("{}: {first}", self.title));
            unhandled(&dead, &self.stats, logged);
            return;
        }
        let mut emit = Emit::default();
        route_dead(dead, &self.errors, &self.errors_schema, &b.ack, &mut emit, &self.stats, logged);
        self.senders.send(emit).await;
    }
}

/// What a flush that ran on its own ([`Sink::begin_flush`]) did to the events of `written`. One
/// that failed as a whole left the sink holding none of them: all of them are to be written
/// again (as retryable failures, so their attempts count).
fn background_outcome(result: Result<(), WriteError>, written: &[Part]) -> Result<(), Failure> {
    match result {
        Ok(()) => Ok(()),
        Err(WriteError::Partial(p)) => Err(Failure::Partial(p)),
        Err(e @ WriteError::Fatal(_)) => Err(Failure::Whole(e, 1)),
        Err(e @ WriteError::Retryable(_)) => {
            // Counted as retries when they are settled.
            let total: usize = written.iter().map(|p| p.batch.len()).sum();
            let error = e.to_string();
            let items = (0..total).map(|index| ItemFailure { index, retryable: true, error: error.clone() }).collect();
            Err(Failure::Partial(PartialFailure { items }))
        }
    }
}

/// The next batch for a sink: the one left over from the last group, else the next to arrive
/// (`None`: the input is closed). Cancel-safe: nothing is taken unless it is returned.
async fn next_batch(
    rx: &mut mpsc::Receiver<SinkBatch>,
    carry: &mut Option<SinkBatch>,
    stats: &NodeStats,
) -> Option<SinkBatch> {
    if let Some(b) = carry.take() {
        return Some(b);
    }
    let b = rx.recv().await?;
    stats.events_in.inc_by(b.len() as u64);
    Some(b)
}

/// The group that begins with `batch`: more batches join until the sink's [`Batching`] bounds
/// are met or its linger has passed since the group began. A batch that overflows `max_events`
/// is split and the rest kept in `carry` for the next group.
async fn gather(
    mut batch: SinkBatch,
    rx: &mut mpsc::Receiver<SinkBatch>,
    shape: &Batching,
    carry: &mut Option<SinkBatch>,
    stats: &NodeStats,
) -> Vec<SinkBatch> {
    let deadline = tokio::time::Instant::now() + shape.linger;
    let max_events = shape.max_events.max(1);
    let mut group = Vec::new();
    let (mut events, mut bytes) = (0, 0);
    loop {
        // `events < max_events` here, so there is room for at least one event.
        let room = max_events - events;
        if batch.len() > room {
            let (head, tail) = split(&batch, room);
            *carry = Some(tail);
            group.push(head);
            break;
        }
        events += batch.len();
        bytes += payload_bytes(&batch);
        group.push(batch);
        if group.len() >= shape.max_batches || events >= max_events || bytes >= shape.max_bytes {
            break;
        }
        batch = match rx.try_recv() {
            Ok(b) => b,
            Err(mpsc::error::TryRecvError::Empty) if !shape.linger.is_zero() => {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(b)) => b,
                    _ => break,
                }
            }
            Err(_) => break,
        };
        stats.events_in.inc_by(batch.len() as u64);
    }
    group
}

fn payload_bytes(b: &SinkBatch) -> usize {
    let offsets = b.payloads.value_offsets();
    (offsets[offsets.len() - 1] - offsets[0]).max(0) as usize
}

/// The first `at` events and the rest, both holding the batch's acknowledgement.
fn split(b: &SinkBatch, at: usize) -> (SinkBatch, SinkBatch) {
    let cut = |offset: usize, len: usize| SinkBatch {
        payloads: b.payloads.slice(offset, len),
        fields: b.fields.iter().map(|(k, a)| (k.clone(), a.slice(offset, len))).collect(),
        ack: b.ack.clone(),
    };
    (cut(0, at), cut(at, b.len() - at))
}

/// The given rows of a batch as a batch of their own, holding the batch's acknowledgement.
fn take_rows(b: &SinkBatch, rows: &[usize]) -> SinkBatch {
    let payloads = BinaryArray::from_iter_values(rows.iter().map(|&r| b.payloads.value(r)));
    let indices = UInt32Array::from_iter_values(rows.iter().map(|&r| r as u32));
    let fields = b
        .fields
        .iter()
        .map(|(k, a)| {
            // `take` of in-range rows cannot fail for the types sink options have; were it to,
            // a NULL value makes the sink refuse those events with a reason instead of losing them.
            let taken = arrow::compute::take(a.as_ref(), &indices, None)
                .unwrap_or_else(|_| arrow::array::new_null_array(a.data_type(), rows.len()));
            (k.clone(), taken)
        })
        .collect();
    SinkBatch { payloads, fields, ack: b.ack.clone() }
}

#[cfg(test)]
mod tests {
    use super::Retry;
    use std::time::Duration;

    /// Many draws per attempt: each within [backoff_min, backoff_max] (the old backon jitter,
    /// added after the cap, reached nearly twice backoff_max), the median doubling per attempt
    /// until it nears the cap, and the delays at the cap still spread rather than all equal.
    #[test]
    fn delays_stay_within_min_and_max_and_grow() {
        for (min, max) in [(100, 1000), (100, 30_000), (250, 250), (500, 300), (1, 5)] {
            let (min, max) = (Duration::from_millis(min), Duration::from_millis(max));
            let retry = Retry { max_attempts: 10, min, max };
            let bound = max.max(min);
            let mut previous_median = Duration::ZERO;
            for attempt in 1..=40 {
                let mut draws: Vec<Duration> = (0..2000).map(|_| retry.delay(attempt)).collect();
                draws.sort();
                let (shortest, median, longest) = (draws[0], draws[1000], draws[1999]);
                assert!(shortest >= min, "attempt {attempt}: {shortest:?} < backoff_min {min:?}");
                assert!(longest <= bound, "attempt {attempt}: {longest:?} > backoff_max {bound:?}");
                let grown = previous_median.mul_f64(1.9).min(bound.mul_f64(0.7));
                assert!(median >= grown, "attempt {attempt}: median {median:?} after {previous_median:?}");
                if bound >= min * 2 {
                    assert!(longest > shortest, "attempt {attempt}: no jitter");
                }
                previous_median = median;
            }
        }
    }
}
