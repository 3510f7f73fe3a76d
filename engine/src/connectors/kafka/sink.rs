//! The `kafka` sink: an idempotent producer whose delivery reports decide acknowledgements.
//!
//! `write` checks a batch (topic per event, sizes) and hands every event to librdkafka, which
//! batches, compresses and retries on its own for up to `delivery_timeout`. Events it can tell
//! are unsendable (no topic, larger than `max_message_size`) are refused there, one by one, as a
//! [`WriteError::Partial`]; the rest of the batch goes on. `flush` waits for every delivery
//! report since the last flush:
//!
//! - all delivered: `Ok`, and the engine acknowledges the events to their sources;
//! - some failed: [`WriteError::Partial`] names them by position, transient failures (broker
//!   away, leader moving, timed out) as retryable and refusals for good (too large, invalid) as
//!   not. The sink forgets them; the engine writes the retryable ones again on their own after
//!   a backoff and dead-letters the refused ones to `.errors`, so one bad event never takes its
//!   neighbours with it, and only failed events are re-sent (the idempotent producer keeps
//!   librdkafka's own retries free of duplicates).
//!
//! If the engine gives up on a flush that failed as a whole (no reports within the delivery
//! timeout, its retry policy exhausted and `.errors` wired), the next `write` starts afresh:
//! reports still arriving for the abandoned events are ignored. If librdkafka reports a fatal
//! producer error (the idempotence guarantee broke), the producer is rebuilt and everything not
//! confirmed is sent again: duplicates are possible then, loss is not.

use super::config::{client_config, creation_error};
use crate::connectors::{BoxFuture, ConnectorError, ItemFailure, PartialFailure, Sink, WriteError};
use crate::exec::batch::SinkBatch;
use crate::options::Options;
use arrow::array::{Array, AsArray, BinaryArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// Which written event a delivery report is about.
#[derive(Debug)]
pub struct Id {
    generation: u64,
    batch: u32,
    row: u32,
}

#[derive(Debug, Default)]
struct Reports {
    generation: u64,
    outstanding: usize,
    failures: Vec<(Id, KafkaError)>,
}

/// The producer's context: delivery reports land here (on librdkafka's polling thread).
#[derive(Debug, Default)]
pub struct Deliveries {
    reports: Mutex<Reports>,
    done: Notify,
}

impl Deliveries {
    fn lock(&self) -> MutexGuard<'_, Reports> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Id>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<Id>) {
        let mut r = self.lock();
        if id.generation != r.generation {
            // An event of a flush the engine gave up on.
            return;
        }
        if let Err((e, _)) = result {
            r.failures.push((*id, e.clone()));
        }
        r.outstanding = r.outstanding.saturating_sub(1);
        if r.outstanding == 0 {
            // `notify_one` keeps a permit if `flush` is not waiting yet.
            self.done.notify_one();
        }
    }
}

/// A batch written since the last successful flush, kept so failed events can be sent again
/// (the arrays are reference-counted: keeping them copies nothing).
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
    generation: u64,
    max_message_size: usize,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("written", &self.written.len()).finish_non_exhaustive()
    }
}

/// Creates missing topics before the first event goes to them.
struct Admin {
    client: AdminClient<DefaultClientContext>,
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
        let producer = create_producer(&config)?;
        let admin = if options.bool("create_topics").unwrap_or(false) {
            let client =
                base.create::<AdminClient<DefaultClientContext>>().map_err(|e| creation_error("admin client", e))?;
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
            generation: 0,
            max_message_size,
            delivery_timeout,
        })
    }

    fn deliveries(&self) -> &Deliveries {
        self.producer.context()
    }

    /// Forget what the engine gave up on (it dead-lettered those events) and start a new
    /// generation, so their late delivery reports are ignored.
    fn start_over(&mut self) {
        self.generation += 1;
        self.written.clear();
        self.failed.clear();
        self.abandoned = false;
        let mut r = self.deliveries().lock();
        *r = Reports { generation: self.generation, outstanding: 0, failures: Vec::new() };
    }

    /// librdkafka reports a fatal error when the idempotent producer can no longer guarantee
    /// order and no duplicates; the only way on is a new producer.
    fn recover_from_fatal(&mut self) -> Result<(), WriteError> {
        let Some((code, reason)) = self.producer.client().fatal_error() else { return Ok(()) };
        warn!("Kafka producer failed fatally ({code}: {reason}); creating a new one and re-sending unconfirmed events");
        self.producer = create_producer(&self.config).map_err(|e| WriteError::Retryable(e.to_string()))?;
        self.generation += 1;
        *self.deliveries().lock() = Reports { generation: self.generation, outstanding: 0, failures: Vec::new() };
        self.failed = self
            .written
            .iter()
            .enumerate()
            .flat_map(|(b, w)| (0..w.payloads.len()).map(move |r| (b as u32, r as u32)))
            .collect();
        Ok(())
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
        let (i, generation) = (row as usize, self.generation);
        let headers = match &w.headers {
            Some(h) if h.is_valid(i) => Some(parse_headers(h.value(i))),
            _ => None,
        };
        let mut record = BaseRecord::with_opaque_to(w.topics.value(i), Box::new(Id { generation, batch: b, row }))
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
        self.deliveries().lock().outstanding += rows.len();
        for &(b, r) in rows {
            if let Err(e) = self.send(b, r).await {
                let mut reports = self.deliveries().lock();
                reports.failures.push((Id { generation: self.generation, batch: b, row: r }, e));
                reports.outstanding -= 1;
            }
        }
    }

    /// Wait until every event sent is reported on (or the wait is hopeless).
    async fn wait_for_reports(&self) -> Result<Vec<(Id, KafkaError)>, WriteError> {
        // librdkafka reports every message within `message.timeout.ms`; past that something is
        // badly wrong, and the engine's retry takes over.
        let limit = tokio::time::Instant::now() + self.delivery_timeout + Duration::from_secs(10);
        loop {
            {
                let mut r = self.deliveries().lock();
                if r.outstanding == 0 {
                    return Ok(std::mem::take(&mut r.failures));
                }
            }
            if tokio::time::timeout_at(limit, self.deliveries().done.notified()).await.is_err() {
                return Err(WriteError::Retryable(format!(
                    "no delivery report within {:?}",
                    self.delivery_timeout + Duration::from_secs(10)
                )));
            }
        }
    }
}

fn create_producer(config: &ClientConfig) -> Result<ThreadedProducer<Deliveries>, ConnectorError> {
    config.create_with_context(Deliveries::default()).map_err(|e| creation_error("producer", e))
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
            let failures = match self.wait_for_reports().await {
                Ok(f) => f,
                Err(e) => {
                    self.abandoned = true;
                    return Err(e);
                }
            };
            // Positions among everything written since the last flush, in write order.
            let mut starts = Vec::with_capacity(self.written.len());
            let mut at = 0;
            for w in &self.written {
                starts.push(at);
                at += w.payloads.len();
            }
            self.written.clear();
            self.abandoned = false;
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
        })
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
