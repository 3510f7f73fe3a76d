//! Connectors: one folder each, registered in one explicit list ([`specs`] for what the checker
//! validates, [`build_source`] / [`build_sink`] for what runs).
//!
//! Each connector declares its options (names, types, defaults, docs) so `phoenix check`
//! validates a flow's connector blocks before anything runs. At run time a connector is one of
//! two traits, each with one required method: a [`Source`] reads payloads and hands them to its
//! [`SourceContext`]; a [`Sink`] writes [`SinkBatch`]es. Decoding, operators, retries, dead
//! letters and acknowledgements are the engine's job, not the connector's.

pub mod aws;
pub mod elasticsearch;
pub mod file;
pub mod generate;
pub mod http;
pub mod kafka;
mod lines;
pub mod s3;
pub mod sqs;
pub mod stdio;

use crate::exec::batch::{RawBatch, SinkBatch};
use crate::observability::metrics::NodeStats;
use crate::observability::readiness::Connected;
use crate::options::Options;
use phoenix_dsl::catalog::{ConnectorSpec, MetaSpec, OptionSpec, OptionType};
use phoenix_dsl::types::{StreamType, Ty};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connector that cannot start or stopped for good (bad path, port in use).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConnectorError(pub String);

impl ConnectorError {
    pub fn new(m: impl Into<String>) -> ConnectorError {
        ConnectorError(m.into())
    }
}

/// Why a sink write failed. The engine retries per the sink's retry options.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// Worth trying again (I/O error, timeout, throttling).
    #[error("{0}")]
    Retryable(String),
    /// Trying again cannot help (the events themselves are refused): dead-letter them.
    #[error("{0}")]
    Fatal(String),
    /// Some events failed and every other one was accepted (an Elasticsearch bulk response with
    /// `errors: true`). The sink keeps none of the failed events: the engine writes the
    /// retryable ones again on their own, after a backoff, and dead-letters the rest.
    ///
    /// From [`Sink::write`], indices count the events of the batch given; from
    /// [`Sink::flush`], the events written since the last flush, in the order written.
    #[error("{0}")]
    Partial(PartialFailure),
}

/// The events of a write or flush that failed, each with its own error.
#[derive(Debug, Clone, Default)]
pub struct PartialFailure {
    pub items: Vec<ItemFailure>,
}

/// One event that failed.
#[derive(Debug, Clone)]
pub struct ItemFailure {
    /// Position of the event (see [`WriteError::Partial`]).
    pub index: usize,
    /// Worth trying again (throttled, a shard unavailable); otherwise it goes to `.errors`.
    pub retryable: bool,
    /// The reason, as the service gave it.
    pub error: String,
}

impl std::fmt::Display for PartialFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let retryable = self.items.iter().filter(|i| i.retryable).count();
        write!(f, "{} event(s) failed ({retryable} retryable)", self.items.len())?;
        match self.items.first() {
            Some(first) => write!(f, ", first: {}", first.error),
            None => Ok(()),
        }
    }
}

/// How the engine groups a sink's input before each [`Sink::flush`]. The engine keeps the
/// batches (and their acknowledgements) and decides when a group is complete; the sink only
/// states its preferred size. A group closes when it holds `max_batches` batches,
/// `max_events` events or `max_bytes` payload bytes, or `linger` after its first batch
/// arrived, whichever comes first. A batch that would overflow `max_events` is split, the rest
/// starting the next group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub max_batches: usize,
    pub max_events: usize,
    pub max_bytes: usize,
    /// How long a partly filled group waits for more batches. Zero: take what is queued now.
    pub linger: Duration,
}

impl Default for Batching {
    /// What a file or stdout sink wants: whatever is queued (up to 32 batches), no waiting.
    fn default() -> Batching {
        Batching { max_batches: 32, max_events: usize::MAX, max_bytes: usize::MAX, linger: Duration::ZERO }
    }
}

/// Reads events in. Returns when the input ends (a file read to the end) or when
/// [`SourceContext::stopping`] fires; an error stops the flow.
pub trait Source: Send {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ConnectorError>>;
}

/// A flush running on its own ([`Sink::begin_flush`]).
pub type Flushing = BoxFuture<'static, Result<(), WriteError>>;

/// Writes events out. `write` may buffer; once `flush` returns `Ok` (or the future
/// [`Sink::begin_flush`] returned resolves `Ok`), everything written since the previous flush is
/// durably accepted and the events are acknowledged to their sources.
///
/// After a `flush` that failed with `Retryable` or `Fatal` the sink still holds what was
/// written (the engine calls `flush` again, or gives those events up); after
/// [`WriteError::Partial`] it holds nothing.
pub trait Sink: Send {
    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>>;

    fn flush(&mut self) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(async { Ok(()) })
    }

    /// Start flushing everything written so far and return at once, so the engine can write
    /// the next group while this one is being confirmed (a Kafka producer waiting for delivery
    /// reports). The returned future resolves as [`Sink::flush`] would, except that the sink
    /// holds none of those events afterwards: if it fails as a whole, the engine writes them
    /// again. `None` (the default, or whenever the sink cannot now): the engine calls
    /// [`Sink::flush`] and waits for it.
    fn begin_flush(&mut self) -> Option<Flushing> {
        None
    }

    /// How much input to gather before a flush (a bulk request's size and linger).
    fn batching(&self) -> Batching {
        Batching::default()
    }

    /// For a sink that writes to a service: a future that resolves once the service has
    /// answered (it retries on its own, logging at most one line per 30 s), so `/ready`
    /// reports the pod ready only when it can deliver. The first flush the service accepts
    /// counts too. `None` (the default): ready as soon as the sink is built (a file is open).
    fn connected(&self) -> Option<BoxFuture<'static, ()>> {
        None
    }
}

/// What a running source talks to.
#[derive(Debug)]
pub struct SourceContext {
    pub name: String,
    /// The events the flow declares for this source (`generate` makes events of it).
    pub stream: StreamType,
    pub options: Options,
    /// Most events per batch.
    pub batch_size: usize,
    /// Longest a partial batch waits.
    pub linger: Duration,
    tx: mpsc::Sender<RawBatch>,
    shutdown: CancellationToken,
    stats: Arc<NodeStats>,
    /// The metadata the flow reads (names without `@`); `None`: all of it.
    metadata_read: Option<Arc<[String]>>,
    /// Set once the source has reached its service (`/ready`).
    connected: Connected,
}

/// The flow is shutting down (or the workers are gone): stop reading.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the flow is stopping")]
pub struct Stopped;

impl SourceContext {
    pub(crate) fn new(
        name: String,
        stream: StreamType,
        options: Options,
        tx: mpsc::Sender<RawBatch>,
        shutdown: CancellationToken,
        stats: Arc<NodeStats>,
    ) -> Result<SourceContext, ConnectorError> {
        let batch_size = options.positive("batch_size").map_err(|e| ConnectorError(e.to_string()))?;
        let linger = options.duration("linger").unwrap_or(Duration::from_millis(5));
        Ok(SourceContext {
            name,
            stream,
            options,
            batch_size,
            linger,
            tx,
            shutdown,
            stats,
            metadata_read: None,
            connected: Connected::default(),
        })
    }

    /// Report reaching the service through `connected` (the flow's readiness registry).
    pub(crate) fn with_connected(mut self, connected: Connected) -> SourceContext {
        self.connected = connected;
        self
    }

    /// The source has reached its service (a Kafka consumer got its partitions, a listener is
    /// bound, a file is open): `/ready` waits for every source and sink to say so. Idempotent.
    pub fn set_connected(&self) {
        self.connected.set();
    }

    /// The flag itself, for a source that connects on a thread of its own.
    pub fn connected_flag(&self) -> Connected {
        self.connected.clone()
    }

    /// Only `names` of the source's metadata are read by the flow.
    pub(crate) fn with_metadata_read(mut self, names: Vec<String>) -> SourceContext {
        self.metadata_read = Some(names.into());
        self
    }

    /// Whether the flow reads metadata `@name`. A source may leave out what it does not (the
    /// engine fills it with nulls nobody sees), and save building it for every event.
    pub fn reads_metadata(&self, name: &str) -> bool {
        self.metadata_read.as_ref().is_none_or(|m| m.iter().any(|n| n == name))
    }

    /// Hand a batch to the flow; waits while the flow is busy (backpressure).
    pub async fn send(&self, batch: RawBatch) -> Result<(), Stopped> {
        if batch.is_empty() && batch.rejected.is_empty() {
            return Ok(());
        }
        self.stats.events_in.inc_by((batch.len() + batch.rejected.len()) as u64);
        self.stats.bytes_in.inc_by(batch.bytes() as u64);
        self.tx.send(batch).await.map_err(|failed| {
            // The workers are gone: whoever waits on this batch must not think it delivered.
            failed.0.ack.fail("the flow stopped before the events were processed");
            Stopped
        })
    }

    /// Resolves when the flow is asked to stop: finish the current batch and return.
    pub async fn stopping(&self) {
        self.shutdown.cancelled().await
    }

    pub fn is_stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}

/// Which flow a graph is a version of, and which version: an `http` source takes over the
/// socket of another version of the same flow (make-before-break), never of another flow or of
/// another source of its own version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub flow: String,
    pub version: u64,
}

impl Owner {
    /// A version of a flow of its own: it shares nothing.
    pub fn unique() -> Owner {
        static VERSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let version = VERSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Owner { flow: format!("unshared-{version}"), version }
    }

    /// A new version of the flow `flow`.
    pub fn version_of(flow: &str) -> Owner {
        Owner { flow: flow.to_string(), ..Owner::unique() }
    }
}

/// Build the source named by a flow's `source x = CONNECTOR { ... }`, for the version `owner`
/// of a flow.
pub fn build_source(connector: &str, options: &Options, owner: &Owner) -> Result<Box<dyn Source>, ConnectorError> {
    match connector {
        "file" => file::FileSource::new(options).map(|s| Box::new(s) as Box<dyn Source>),
        "stdin" => Ok(Box::new(stdio::StdinSource)),
        "generate" => generate::GenerateSource::new(options).map(|s| Box::new(s) as Box<dyn Source>),
        "http" => http::HttpSource::for_flow(options, owner).map(|s| Box::new(s) as Box<dyn Source>),
        "kafka" => kafka::KafkaSource::new(options).map(|s| Box::new(s) as Box<dyn Source>),
        "sqs" => sqs::SqsSource::new(options).map(|s| Box::new(s) as Box<dyn Source>),
        "s3" => s3::S3Source::new(options).map(|s| Box::new(s) as Box<dyn Source>),
        other => Err(not_runnable(other, "source")),
    }
}

/// Build the sink named by a flow's `sink x = CONNECTOR { ... }`.
pub fn build_sink(connector: &str, options: &Options) -> Result<Box<dyn Sink>, ConnectorError> {
    match connector {
        "file" => file::FileSink::new(options).map(|s| Box::new(s) as Box<dyn Sink>),
        "stdout" => stdio::StdoutSink::new(options).map(|s| Box::new(s) as Box<dyn Sink>),
        "elasticsearch" => elasticsearch::ElasticsearchSink::new(options).map(|s| Box::new(s) as Box<dyn Sink>),
        "kafka" => kafka::KafkaSink::new(options).map(|s| Box::new(s) as Box<dyn Sink>),
        "sqs" => sqs::SqsSink::new(options).map(|s| Box::new(s) as Box<dyn Sink>),
        "s3" => s3::S3Sink::new(options).map(|s| Box::new(s) as Box<dyn Sink>),
        other => Err(not_runnable(other, "sink")),
    }
}

/// Only reachable if [`specs`] declares a connector the two builders above do not know: the
/// checker accepts the flow, so say plainly that this is Phoenix's fault, not the user's.
fn not_runnable(connector: &str, kind: &str) -> ConnectorError {
    ConnectorError(format!(
        "no {kind} runtime for the `{connector}` connector, although the checker accepted it \
         (a bug in Phoenix: please report it)"
    ))
}

/// Every connector, as source and/or sink. This list is the registry.
pub fn specs() -> Vec<ConnectorSpec> {
    vec![
        file::source_spec(),
        file::sink_spec(),
        stdio::source_spec(),
        stdio::sink_spec(),
        generate::source_spec(),
        http::source_spec(),
        kafka::source_spec(),
        kafka::sink_spec(),
        sqs::source_spec(),
        sqs::sink_spec(),
        s3::source_spec(),
        s3::sink_spec(),
        elasticsearch::sink_spec(),
    ]
}

/// Options every source has: how events are grouped into batches.
pub(crate) fn source_options() -> Vec<OptionSpec> {
    vec![
        OptionSpec::new("batch_size", OptionType::Int, "Most events in one micro-batch.").default("8192"),
        OptionSpec::new(
            "linger",
            OptionType::Duration,
            "Longest a partly filled batch waits for more events before it is sent on.",
        )
        .default("5ms"),
    ]
}

/// Options every sink has: the retry policy for failed writes.
pub(crate) fn sink_options() -> Vec<OptionSpec> {
    vec![
        OptionSpec::new(
            "max_attempts",
            OptionType::Int,
            "Attempts per event before it goes to the sink's `.errors` port (0: retry forever).",
        )
        .default("10"),
        OptionSpec::new(
            "backoff_min",
            OptionType::Duration,
            "Shortest retry delay: retry n waits a random time between `backoff_min`·2^(n-1) and \
             `backoff_min`·2^n (the first between this and twice this) until that reaches `backoff_max`.",
        )
        .default("100ms"),
        OptionSpec::new(
            "backoff_max",
            OptionType::Duration,
            "Longest retry delay, jitter included: once `backoff_min`·2^n reaches it, retry n waits a \
             random time between half of it (at least `backoff_min`) and it.",
        )
        .default("30s"),
    ]
}

/// Metadata every source provides.
pub(crate) fn source_metadata() -> Vec<MetaSpec> {
    vec![MetaSpec { name: "size", ty: Ty::Int, optional: false, doc: "Size of the event's raw payload in bytes." }]
}

pub(crate) fn with<T>(mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
    a.extend(b);
    a
}
