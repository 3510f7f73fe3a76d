//! The `kafka` sink: an idempotent producer whose delivery reports decide acknowledgements.
//!
//! `write` checks a batch (topic per event, sizes) and hands every event to librdkafka, which
//! batches, compresses and retries on its own for up to `delivery_timeout`. Events it can tell
//! are unsendable (no topic, larger than `max_message_size`) are refused there, one by one, as a
//! [`WriteError::Partial`]; the rest of the batch goes on. The events written between two
//! flushes are an *epoch*; a flush waits for every delivery report of its epoch. The engine
//! starts flushes with [`Sink::begin_flush`] and writes the next group while earlier epochs
//! are still being confirmed (a few at a time), so the producer is never idle waiting for the
//! broker's answers. A flush's outcome:
//!
//! - all delivered: `Ok`, and the engine acknowledges the events to their sources;
//! - some failed: [`WriteError::Partial`] names them by position, transient failures (broker
//!   away, leader moving, timed out) as retryable and refusals for good (too large, invalid) as
//!   not. The sink forgets them; the engine writes the retryable ones again on their own after
//!   a backoff and dead-letters the refused ones to `.errors`, so one bad event never takes its
//!   neighbours with it, and only failed events are re-sent (the idempotent producer keeps
//!   librdkafka's own retries free of duplicates).
//!
//! - no reports within the delivery timeout (and 10 s more): a retryable failure of the whole
//!   epoch. The epoch is dropped (reports still arriving for it are ignored) and the engine
//!   writes its events again. (Through [`Sink::flush`], used when a flush cannot be started
//!   on its own, the engine retries the flush itself, and once it gives up the next `write`
//!   starts afresh.)
//!
//! If librdkafka reports a fatal
//! producer error (the idempotence guarantee broke), the producer is rebuilt and everything not
//! confirmed is sent again: duplicates are possible then, loss is not.

use super::config::{Reporter, client_config, creation_error};
use crate::connectors::{BoxFuture, ConnectorError, Flushing, ItemFailure, PartialFailure, Sink, WriteError};
use crate::exec::batch::SinkBatch;
use crate::options::Options;
use arrow::array::{Array, AsArray, BinaryArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// Which written event a delivery report is about.
#[derive(Debug)]
pub struct Id {
    epoch: u64,
    batch: u32,
    row: u32,
}

/// The events written between two flushes: how many are not reported on yet, and which failed.
#[derive(Debug, Default)]
struct Epoch {
    outstanding: usize,
    failures: Vec<(Id, KafkaError)>,
}

/// The producer's context: delivery reports land here (on librdkafka's polling thread), in the
/// epoch of their event. An epoch no longer listed was given up on: its reports are ignored.
#[derive(Debug)]
pub struct Deliveries {
    epochs: Mutex<HashMap<u64, Epoch>>,
    done: Notify,
    /// librdkafka's complaints, throttled.
    reporter: Reporter,
}

impl Deliveries {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Epoch>> {
        self.epochs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until every event of `epoch` is reported on, at most `limit`; its failures.
    async fn wait(&self, epoch: u64, limit: Duration) -> Result<Vec<(Id, KafkaError)>, WriteError> {
        // librdkafka reports every message within `message.timeout.ms`; past that something is
        // badly wrong, and the engine's retry takes over.
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before the check, so a report landing in between is not missed.
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.lock().get_mut(&epoch) {
                Some(e) if e.outstanding > 0 => {}
                Some(e) => return Ok(std::mem::take(&mut e.failures)),
                // Not expected (an epoch is listed until its flush is done with it); were it to
                // happen, sending the events again beats assuming them delivered.
                None => return Err(WriteError::Retryable("the delivery reports of these events were lost".into())),
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(WriteError::Retryable(format!("no delivery report within {limit:?}")));
            }
        }
    }
}

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.reporter.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.reporter.error(&error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Id>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<Id>) {
        let mut epochs = self.lock();
        // Not listed: an event of a flush the engine gave up on.
        let Some(e) = epochs.get_mut(&id.epoch) else { return };
        if let Err((err, _)) = result {
            e.failures.push((*id, err.clone()));
        }
        e.outstanding = e.outstanding.saturating_sub(1);
        if e.outstanding == 0 {
            self.done.notify_waiters();
        }
    }
}

/// A batch of the current epoch (written since the last `flush` or `begin_flush`), kept so
/// failed events can be sent again (the arrays are reference-counted: keeping them copies
/// nothing).
#[derive(Debug)]
struct Written {
    payloads: BinaryArray,
    topics: StringArray,
    keys: Option<StringArray>,
    headers: Option<StringArray>,
}

pub struct KafkaSink {
    config: ClientConfig,
    producer: ThreadedProducer<Deliveries>,
    admin: Option<Admin>,
    written: Vec<Written>,
    /// Events to send again on the next flush, (batch, row): everything unconfirmed after the
    /// producer was rebuilt.
    failed: Vec<(u32, u32)>,
    /// The last flush failed: if `write` comes next, the engine gave up on those events.
    abandoned: bool,
    /// The epoch of the events written since the last flush.
    epoch: u64,
    max_message_size: usize,
    delivery_timeout: Duration,
    /// The settings every client of the node shares (for the metadata probe of `/ready`).
    base: ClientConfig,
    reporter: Reporter,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("written", &self.written.len()).finish_non_exhaustive()
    }
}

/// Creates missing topics before the first event goes to them.
struct Admin {
    client: AdminClient<Reporter>,
    partitions: i32,
    replication: i32,
    known: HashSet<String>,
}

impl KafkaSink {
    pub fn new(options: &Options) -> Result<KafkaSink, ConnectorError> {
        let base = client_config(options)?;
        let delivery_timeout = options.duration("delivery_timeout").unwrap_or(Duration::from_secs(30));
        let max_message_size = options.size("max_message_size").unwrap_or(1 << 20);
        let max_message_size = usize::try_from(max_message_size)
            .ok()
            .filter(|m| (1000..=1_000_000_000).contains(m))
            .ok_or_else(|| ConnectorError::new("option `max_message_size` must be between 1000 bytes and 1GB"))?;
        let mut config = base.clone();
        for (k, v) in [("linger.ms", "5"), ("batch.num.messages", "10000"), ("queue.buffering.max.messages", "500000")]
        {
            if config.get(k).is_none() {
                config.set(k, v);
            }
        }
        config
            .set("enable.idempotence", "true")
            .set("compression.type", options.str("compression").unwrap_or("none"))
            .set("message.timeout.ms", delivery_timeout.as_millis().clamp(1, i32::MAX as u128).to_string())
            // Leave room for the record overhead around the largest payload.
            .set("message.max.bytes", (max_message_size + 64 * 1024).to_string());
        let reporter = Reporter::new(&format!("sink {}", options.node()), options);
        let producer = create_producer(&config, 0, &reporter)?;
        let admin = if options.bool("create_topics").unwrap_or(false) {
            let client = base.create_with_context(reporter.clone()).map_err(|e| creation_error("admin client", e))?;
            let partitions = options.int("partitions").unwrap_or(1);
            let replication = options.int("replication").unwrap_or(-1);
            let partitions = i32::try_from(partitions)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| ConnectorError::new("option `partitions` must be positive"))?;
            let replication = i32::try_from(replication).ok().filter(|r| *r == -1 || *r > 0).ok_or_else(|| {
                ConnectorError::new("option `replication` must be positive, or -1 for the broker's default")
            })?;
            Some(Admin { client, partitions, replication, known: HashSet::new() })
        } else {
            None
        };
        Ok(KafkaSink {
            config,
            producer,
            admin,
            written: Vec::new(),
            failed: Vec::new(),
            abandoned: false,
            epoch: 0,
            max_message_size,
            delivery_timeout,
            base,
            reporter,
        })
    }

    fn deliveries(&self) -> &Arc<Deliveries> {
        self.producer.context()
    }

    /// Forget what the engine gave up on (it dead-lettered those events) and start a new
    /// epoch, so their late delivery reports are ignored.
    fn start_over(&mut self) {
        self.deliveries().lock().remove(&self.epoch);
        self.next_epoch();
        self.written.clear();
        self.failed.clear();
        self.abandoned = false;
    }

    fn next_epoch(&mut self) {
        self.epoch += 1;
        self.deliveries().lock().insert(self.epoch, Epoch::default());
    }

    /// librdkafka reports a fatal error when the idempotent producer can no longer guarantee
    /// order and no duplicates; the only way on is a new producer. Flushes in flight keep the
    /// old producer's reports (dropping it fails what it still held, so the engine sends those
    /// again).
    fn recover_from_fatal(&mut self) -> Result<(), WriteError> {
        let Some((code, reason)) = self.producer.client().fatal_error() else { return Ok(()) };
        warn!("Kafka producer failed fatally ({code}: {reason}); creating a new one and re-sending unconfirmed events");
        self.producer = create_producer(&self.config, self.epoch, &self.reporter)
            .map_err(|e| WriteError::Retryable(e.to_string()))?;
        self.failed = self
            .written
            .iter()
            .enumerate()
            .flat_map(|(b, w)| (0..w.payloads.len()).map(move |r| (b as u32, r as u32)))
            .collect();
        Ok(())
    }

    /// Where each written batch starts among the events written since the last flush.
    fn starts(&self) -> Vec<usize> {
        self.written
            .iter()
            .scan(0, |at, w| {
                let start = *at;
                *at += w.payloads.len();
                Some(start)
            })
            .collect()
    }

    async fn create_topics(&mut self, topics: &StringArray) -> Result<(), WriteError> {
        let Some(admin) = &mut self.admin else { return Ok(()) };
        let mut missing: Vec<&str> = Vec::new();
        for t in topics.iter().flatten() {
            if !admin.known.contains(t) && !missing.contains(&t) {
                missing.push(t);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| NewTopic::new(t, admin.partitions, TopicReplication::Fixed(admin.replication)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .client
            .create_topics(&new, &opts)
            .await
            .map_err(|e| WriteError::Retryable(format!("creating topics {}: {e}", missing.join(", "))))?;
        for r in results {
            match r {
                Ok(t) => {
                    info!(topic = %t, partitions = admin.partitions, "created topic");
                    admin.known.insert(t);
                }
                Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    admin.known.insert(t);
                }
                Err((t, e)) => return Err(WriteError::Retryable(format!("creating topic `{t}`: {e}"))),
            }
        }
        Ok(())
    }

    /// Hand one event to librdkafka, waiting while its queue is full.
    async fn send(&self, b: u32, row: u32) -> Result<(), KafkaError> {
        let w = &self.written[b as usize];
        let (i, epoch) = (row as usize, self.epoch);
        let headers = match &w.headers {
            Some(h) if h.is_valid(i) => Some(parse_headers(h.value(i))),
            _ => None,
        };
        let mut record = BaseRecord::with_opaque_to(w.topics.value(i), Box::new(Id { epoch, batch: b, row }))
            .payload(w.payloads.value(i));
        if let Some(k) = &w.keys
            && k.is_valid(i)
        {
            record = record.key(k.value(i));
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // librdkafka's queue is full: wait for deliveries to make room.
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Send the events of `rows`, counting them as outstanding; an event librdkafka refuses at
    /// once counts as a failed delivery.
    async fn send_all(&mut self, rows: &[(u32, u32)]) {
        self.deliveries().lock().entry(self.epoch).or_default().outstanding += rows.len();
        for &(b, r) in rows {
            if let Err(e) = self.send(b, r).await {
                let mut epochs = self.deliveries().lock();
                let epoch = epochs.entry(self.epoch).or_default();
                epoch.failures.push((Id { epoch: self.epoch, batch: b, row: r }, e));
                epoch.outstanding = epoch.outstanding.saturating_sub(1);
            }
        }
    }

    fn report_limit(&self) -> Duration {
        self.delivery_timeout + Duration::from_secs(10)
    }
}

/// A producer whose reports go to epochs from `epoch` on.
fn create_producer(
    config: &ClientConfig,
    epoch: u64,
    reporter: &Reporter,
) -> Result<ThreadedProducer<Deliveries>, ConnectorError> {
    let deliveries = Deliveries { epochs: Mutex::default(), done: Notify::new(), reporter: reporter.clone() };
    deliveries.lock().insert(epoch, Epoch::default());
    config.create_with_context(deliveries).map_err(|e| creation_error("producer", e))
}

/// The failed deliveries of an epoch as the engine's partial failure, by position among its
/// events (`starts`: where each written batch starts).
fn failed_events(failures: Vec<(Id, KafkaError)>, starts: &[usize]) -> Result<(), WriteError> {
    if failures.is_empty() {
        return Ok(());
    }
    let items = failures
        .into_iter()
        .map(|(id, e)| {
            let retryable = !permanent(&e);
            ItemFailure {
                index: starts.get(id.batch as usize).map_or(usize::MAX, |s| s + id.row as usize),
                retryable,
                error: if retryable { e.to_string() } else { format!("Kafka refused the event: {e}") },
            }
        })
        .collect();
    Err(WriteError::Partial(PartialFailure { items }))
}

/// A JSON object of names to values; non-string values are sent as their JSON text, a
/// document that is not an object becomes one header `headers` holding it.
fn parse_headers(text: &str) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) {
        Ok(obj) => {
            for (k, v) in obj {
                h = match v {
                    serde_json::Value::Null => h.insert(Header { key: &k, value: None::<&[u8]> }),
                    serde_json::Value::String(s) => h.insert(Header { key: &k, value: Some(s.as_bytes()) }),
                    other => h.insert(Header { key: &k, value: Some(other.to_string().as_bytes()) }),
                };
            }
        }
        Err(_) => h = h.insert(Header { key: "headers", value: Some(text.as_bytes()) }),
    }
    h
}

/// Errors that no retry can fix: the broker refuses the event itself.
fn permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::BadMessage
        )
    )
}

/// A per-event option as strings (expressions may come back as views or dictionaries).
fn strings(batch: &SinkBatch, name: &str) -> Result<Option<StringArray>, WriteError> {
    let Some(a) = batch.field(name) else { return Ok(None) };
    let a = if a.data_type() == &DataType::Utf8 {
        a.clone()
    } else {
        cast(a, &DataType::Utf8).map_err(|e| WriteError::Fatal(format!("`{name}`: {e}")))?
    };
    Ok(Some(a.as_string::<i32>().clone()))
}

impl Sink for KafkaSink {
    /// Connected once a metadata request to the brokers succeeded (the producer itself has no
    /// request to make until there are events). The probe's own client reports through the
    /// node's throttled reporter and is dropped once connected.
    fn connected(&self) -> Option<BoxFuture<'static, ()>> {
        let (base, reporter) = (self.base.clone(), self.reporter.clone());
        Some(Box::pin(async move {
            let probe: Arc<BaseProducer<Reporter>> = match base.create_with_context(reporter.clone()) {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    reporter.warn(format_args!("cannot create a Kafka client to reach the brokers: {e}"));
                    return std::future::pending().await;
                }
            };
            loop {
                let p = probe.clone();
                // Blocking, so on a blocking thread; short, so a stopping flow waits little for it.
                let fetched = tokio::task::spawn_blocking(move || {
                    p.client().fetch_metadata(None, Duration::from_secs(1)).is_ok()
                })
                .await;
                if fetched.unwrap_or(false) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }))
    }

    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            // Only a flush that failed as a whole leaves events behind for the engine to give
            // up on; `failed` (unconfirmed events after a rebuilt producer) is sent at flush.
            if self.abandoned {
                self.start_over();
            }
            self.recover_from_fatal()?;
            let topics = strings(batch, "topic")?
                .ok_or_else(|| WriteError::Fatal("the sink has no `topic` for these events".into()))?;
            // Events that cannot be sent are refused alone; the others go on.
            let mut refused = Vec::new();
            for i in 0..batch.len() {
                let size = batch.payloads.value(i).len();
                let error = if topics.is_null(i) {
                    "the `topic` expression is NULL for this event".to_string()
                } else if size > self.max_message_size {
                    format!(
                        "an event of {size} bytes is larger than `max_message_size` ({} bytes)",
                        self.max_message_size
                    )
                } else {
                    continue;
                };
                refused.push(ItemFailure { index: i, retryable: false, error });
            }
            let keys = strings(batch, "key")?;
            let headers = strings(batch, "headers")?;
            let mut written = Written { payloads: batch.payloads.clone(), topics, keys, headers };
            if !refused.is_empty() {
                if refused.len() == batch.len() {
                    return Err(WriteError::Partial(PartialFailure { items: refused }));
                }
                // Keep only the accepted rows: flush reports count positions among them, as the
                // engine does once it has cut the refused ones out.
                let bad: HashSet<usize> = refused.iter().map(|f| f.index).collect();
                let kept: Vec<u32> = (0..batch.len()).filter(|i| !bad.contains(i)).map(|i| i as u32).collect();
                written = written.take(&kept)?;
            }
            self.create_topics(&written.topics).await?;
            let b = self.written.len() as u32;
            let rows: Vec<(u32, u32)> = (0..written.payloads.len() as u32).map(|r| (b, r)).collect();
            self.written.push(written);
            self.send_all(&rows).await;
            if refused.is_empty() { Ok(()) } else { Err(WriteError::Partial(PartialFailure { items: refused })) }
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(async move {
            if let Err(e) = self.recover_from_fatal() {
                self.abandoned = true;
                return Err(e);
            }
            if !self.failed.is_empty() {
                let again = std::mem::take(&mut self.failed);
                self.send_all(&again).await;
            }
            let failures = match self.deliveries().wait(self.epoch, self.report_limit()).await {
                Ok(f) => f,
                Err(e) => {
                    self.abandoned = true;
                    return Err(e);
                }
            };
            let starts = self.starts();
            self.written.clear();
            self.abandoned = false;
            failed_events(failures, &starts)
        })
    }

    fn begin_flush(&mut self) -> Option<Flushing> {
        // Events to send again (after a rebuilt producer) need an async send first: flush.
        if !self.failed.is_empty() || self.abandoned || self.producer.client().fatal_error().is_some() {
            return None;
        }
        let (epoch, deliveries, limit, starts) =
            (self.epoch, self.deliveries().clone(), self.report_limit(), self.starts());
        self.written.clear();
        self.next_epoch();
        Some(Box::pin(async move {
            let result = deliveries.wait(epoch, limit).await;
            // Done with, or given up on: later reports are ignored.
            deliveries.lock().remove(&epoch);
            failed_events(result?, &starts)
        }))
    }
}

impl Written {
    /// The given rows only.
    fn take(&self, rows: &[u32]) -> Result<Written, WriteError> {
        let idx = arrow::array::UInt32Array::from(rows.to_vec());
        let take = |a: &dyn Array| {
            arrow::compute::take(a, &idx, None).map_err(|e| WriteError::Fatal(format!("selecting events: {e}")))
        };
        let strings = |a: &Option<StringArray>| -> Result<Option<StringArray>, WriteError> {
            a.as_ref().map(|a| Ok(take(a)?.as_string::<i32>().clone())).transpose()
        };
        Ok(Written {
            payloads: take(&self.payloads)?.as_binary::<i32>().clone(),
            topics: take(&self.topics)?.as_string::<i32>().clone(),
            keys: strings(&self.keys)?,
            headers: strings(&self.headers)?,
        })
    }
}
