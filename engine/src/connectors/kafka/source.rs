//! The `kafka` source: one consumer-group member, polled on a thread of its own.
//!
//! ```text
//!  poll thread ──try_send──▶ forwarder task ──ctx.send──▶ workers … sinks
//!  (consumer, batches,         (async; waits on            │
//!   commits, rebalances)        backpressure)              ▼ ack (every sink flushed)
//!        ▲                                             ack task ──▶ Offsets ──▶ commit
//!        └──────────────── commit on the poll thread, every `commit_interval` ─┘
//! ```
//!
//! - librdkafka fetches every assigned partition in the background, in parallel; the poll thread
//!   turns what it returns into batches of at most `batch_size` events (closed early after
//!   `linger`), each with its metadata columns (`@key`, `@topic`, `@partition`, `@offset`,
//!   `@timestamp`, `@headers`).
//! - A batch's offsets are tracked per partition in [`Offsets`] once the flow has it; the commit
//!   point moves only over the contiguous acknowledged prefix.
//! - Backpressure: when the flow does not take a batch, the thread waits for it (committing
//!   meanwhile, every `commit_interval`), as any consumer busy processing does; librdkafka keeps
//!   fetching ahead until its own bounded queue is full. Only if the flow takes nothing for
//!   `HANDOFF_WAIT` (a sink down, retrying) are the assigned partitions paused, and the thread
//!   goes back to polling, so rebalances are served again (a member that stops polling for
//!   `max.poll.interval.ms` is thrown out of its group). Pausing is the last resort: librdkafka
//!   drops what it fetched ahead, and resumes with a fetch from inside a record batch, which
//!   brokers must answer with that whole batch (tansu 0.6's in-memory storage answers with the
//!   batches after it: see `tests/support/clients.py`).
//! - A rebalance that revokes partitions waits up to `drain_timeout` for their in-flight batches,
//!   commits what was acknowledged and forgets the rest; later acknowledgements of those batches
//!   are ignored, and the partitions' next owner reads the unacknowledged events again.
//! - A failed acknowledgement (the events were not delivered) stops the source with an error,
//!   after committing what precedes it: the events are read again when the flow restarts. This is
//!   rather than seeking back and retrying in place, because a failed acknowledgement means a
//!   sink has given up or is shutting down; retrying is the sinks' job, and a flow that cannot
//!   deliver should say so loudly. While the flow is stopping, a failed acknowledgement is
//!   expected and only means "not committed".

use super::config::{Reporter, client_config, creation_error};
use super::offsets::{Offsets, Slot, Tp};
use crate::connectors::{BoxFuture, ConnectorError, Source, SourceContext};
use crate::exec::ack::{Ack, AckWaiter};
use crate::exec::batch::{RawBatch, RawBatchBuilder};
use crate::observability::readiness::Connected;
use crate::options::Options;
use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampNanosecondBuilder};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long one poll waits when there is nothing to finish sooner.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How often a paused consumer polls (for rebalances and heartbeats) and retries the hand-off.
const PAUSED_POLL: Duration = Duration::from_millis(20);
/// How long the poll thread waits for the flow to take a batch before it pauses the partitions.
/// Pausing drops what librdkafka has fetched ahead (it is fetched again on resume), so a flow
/// that is only busy (a sink waiting for delivery reports, a slow first produce) is waited for
/// instead. Polling stops meanwhile, which delays a rebalance by at most this much (commits go
/// on); far below librdkafka's default `max.poll.interval.ms` of five minutes.
const HANDOFF_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct KafkaSource {
    config: rdkafka::ClientConfig,
    topics: Vec<String>,
    commit_interval: Duration,
    drain_timeout: Duration,
    reporter: Reporter,
}

impl KafkaSource {
    pub fn new(options: &Options) -> Result<KafkaSource, ConnectorError> {
        let mut config = client_config(options)?;
        let group = options.str("group").filter(|g| !g.is_empty()).ok_or_else(|| {
            ConnectorError::new("option `group` must name a consumer group (replicas with one group share partitions)")
        })?;
        let topics: Vec<String> = options.strings("topic").into_iter().filter(|t| !t.is_empty()).collect();
        if topics.is_empty() {
            return Err(ConnectorError::new("option `topic` must name at least one topic"));
        }
        // Offsets are committed by hand, and only once events are delivered; properties the
        // user set win over the defaults below, except the ones delivery depends on.
        // A short heartbeat shortens the window in which a joining member makes commits fail
        // (REBALANCE_IN_PROGRESS), which is what a rebalance replays. A subscribed topic created
        // after the group formed (by a sink's `create_topics`, say) is found only by a periodic
        // metadata refresh: every 10 s, not librdkafka's 5 minutes. When the flow is busy for a
        // moment the fetch queue fills, and librdkafka then waits `fetch.queue.backoff.ms`
        // (1 s by default) before fetching again, long after the flow has caught up: 10 ms.
        for (k, v) in [
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
            ("fetch.wait.max.ms", "100"),
            ("topic.metadata.refresh.interval.ms", "10000"),
            ("fetch.queue.backoff.ms", "10"),
        ] {
            if config.get(k).is_none() {
                config.set(k, v);
            }
        }
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", options.str("start").unwrap_or("earliest"));
        let commit_interval = options.duration("commit_interval").unwrap_or(Duration::from_secs(1));
        let drain_timeout = options.duration("drain_timeout").unwrap_or(Duration::from_secs(30));
        // Create a throwaway consumer now so a bad setting stops the flow before it starts.
        let reporter = Reporter::new(&format!("source {}", options.node()), options);
        config
            .create_with_context::<_, BaseConsumer<Reporter>>(reporter.clone())
            .map_err(|e| creation_error("consumer", e))?;
        Ok(KafkaSource { config, topics, commit_interval, drain_timeout, reporter })
    }
}

/// What the consumer's callbacks (run on the poll thread, inside `poll`) share with it.
struct Context {
    name: String,
    offsets: Arc<Mutex<Offsets>>,
    drain_timeout: Duration,
    /// Set when partitions were assigned, so a paused consumer pauses the new ones too.
    assigned: AtomicBool,
    /// librdkafka's complaints, throttled.
    reporter: Reporter,
    /// Set by the first assignment (even an empty one: the group answered): `/ready`.
    connected: Connected,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.reporter.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.reporter.error(&error, reason);
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Context>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let tps = tps_of(tpl);
        // Give the batches in flight a moment to be acknowledged, so the next owner replays less.
        let deadline = Instant::now() + self.drain_timeout;
        while lock(&self.offsets).in_flight(Some(&tps)) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut offsets = lock(&self.offsets);
        let left = offsets.in_flight(Some(&tps));
        let commits = offsets.take_commits_of(&tps);
        offsets.revoke(&tps);
        drop(offsets);
        if !commits.is_empty()
            && let Err(e) = consumer.commit(&commit_list(&commits), CommitMode::Sync)
        {
            warn!(source = %self.name, "committing revoked partitions failed: {e}; their next owner replays more");
        }
        info!(source = %self.name, partitions = tps.len(), unacknowledged_batches = left,
            "partitions revoked; acknowledged offsets committed");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Context>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let tps = tps_of(tpl);
                info!(source = %self.name, partitions = ?tps.iter().map(|(t, p)| format!("{t}/{p}")).collect::<Vec<_>>(),
                    "partitions assigned");
                lock(&self.offsets).assign(tps);
                self.assigned.store(true, Ordering::Release);
                self.connected.set();
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(source = %self.name, "rebalance failed: {e}"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, committed: &TopicPartitionList) {
        if let Err(e) = result {
            // Not fatal: the next commit includes these offsets again.
            warn!(source = %self.name, "offset commit failed: {e}");
            let mut offsets = lock(&self.offsets);
            for el in committed.elements() {
                if let Offset::Offset(o) = el.offset() {
                    offsets.commit_failed(&(Arc::from(el.topic()), el.partition()), o);
                }
            }
        }
    }
}

fn lock(m: &Mutex<Offsets>) -> MutexGuard<'_, Offsets> {
    // A panic while holding the lock leaves plain bookkeeping behind; keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements().iter().map(|e| (Arc::from(e.topic()), e.partition())).collect()
}

fn commit_list(commits: &[(Tp, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in commits {
        // Only fails for an invalid offset, which a message's offset + 1 never is.
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    tpl
}

impl Source for KafkaSource {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(async move {
            let offsets = Arc::new(Mutex::new(Offsets::default()));
            let context = Context {
                name: ctx.name.clone(),
                offsets: offsets.clone(),
                drain_timeout: self.drain_timeout,
                assigned: AtomicBool::new(false),
                reporter: self.reporter,
                connected: ctx.connected_flag(),
            };
            let consumer: BaseConsumer<Context> =
                self.config.create_with_context(context).map_err(|e| creation_error("consumer", e))?;
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&topics)
                .map_err(|e| ConnectorError::new(format!("cannot subscribe to {}: {e}", self.topics.join(", "))))?;
            info!(source = %ctx.name, topics = %self.topics.join(","), "consuming");

            // One batch may wait between the poll thread and the flow; more is the flow's queue.
            let (tx, mut rx) = mpsc::channel::<RawBatch>(1);
            let stop = CancellationToken::new();
            let poller = Poller {
                name: ctx.name.clone(),
                consumer,
                offsets,
                tx,
                stop: stop.clone(),
                runtime: tokio::runtime::Handle::current(),
                batch_size: ctx.batch_size,
                linger: ctx.linger,
                commit_interval: self.commit_interval,
                drain_timeout: self.drain_timeout,
                building: Building::default(),
            };
            let thread = tokio::task::spawn_blocking(move || poller.run());

            // Forward until the poll thread is done; on shutdown it sends what it still holds
            // and then closes the channel.
            let mut stopping = false;
            loop {
                tokio::select! {
                    b = rx.recv() => match b {
                        Some(batch) => {
                            let ack = batch.ack.clone();
                            if ctx.send(batch).await.is_err() {
                                ack.fail("the flow stopped before the events were processed");
                                stop.cancel();
                            }
                        }
                        None => break,
                    },
                    _ = ctx.stopping(), if !stopping => {
                        stopping = true;
                        stop.cancel();
                    }
                }
            }
            drop(ctx);
            match thread.await {
                Ok(r) => r,
                Err(e) => Err(ConnectorError::new(format!("the Kafka poll thread failed: {e}"))),
            }
        })
    }
}

/// A finished batch the flow has not taken yet: the batch, its waiter, and per partition the
/// last offset it holds.
struct Ready {
    batch: RawBatch,
    waiter: AckWaiter,
    parts: Vec<(Tp, i64)>,
}

struct Poller {
    name: String,
    consumer: BaseConsumer<Context>,
    offsets: Arc<Mutex<Offsets>>,
    tx: mpsc::Sender<RawBatch>,
    stop: CancellationToken,
    runtime: tokio::runtime::Handle,
    batch_size: usize,
    linger: Duration,
    commit_interval: Duration,
    drain_timeout: Duration,
    building: Building,
}

/// The batch being built.
#[derive(Default)]
struct Building {
    meta: MetaBuilders,
    payloads: RawBatchBuilder,
    /// Per partition in the batch: its last offset.
    parts: Vec<(Tp, i64)>,
    /// When the batch got its first event.
    started: Option<Instant>,
}

impl Poller {
    fn run(mut self) -> Result<(), ConnectorError> {
        let mut ready: VecDeque<Ready> = VecDeque::new();
        let mut paused = false;
        let mut last_commit = Instant::now();
        let result = loop {
            if self.stop.is_cancelled() {
                break Ok(());
            }
            if let Some(f) = lock(&self.offsets).failure() {
                break Err(ConnectorError::new(format!(
                    "{f}; stopping so they are read again on restart (offsets after them are not committed)"
                )));
            }
            // Hand finished batches to the flow; pause while it does not take them.
            while let Some(r) = ready.pop_front() {
                match self.tx.try_send(r.batch) {
                    Ok(()) => self.track(r.waiter, r.parts),
                    Err(TrySendError::Full(batch)) if !paused => match self.wait_for_room(&mut last_commit) {
                        Some(permit) => {
                            permit.send(batch);
                            self.track(r.waiter, r.parts);
                        }
                        None => {
                            ready.push_front(Ready { batch, ..r });
                            break;
                        }
                    },
                    Err(TrySendError::Full(batch)) => {
                        ready.push_front(Ready { batch, ..r });
                        break;
                    }
                    Err(TrySendError::Closed(batch)) => {
                        batch.ack.fail("the flow stopped before the events were processed");
                        self.stop.cancel();
                        break;
                    }
                }
            }
            let assigned = self.consumer.context().assigned.swap(false, Ordering::AcqRel);
            if !ready.is_empty() && (!paused || assigned) {
                self.set_paused(true);
                paused = true;
            } else if ready.is_empty() && paused {
                self.set_paused(false);
                paused = false;
            }
            self.commit_if_due(&mut last_commit);
            let timeout = if paused {
                PAUSED_POLL
            } else {
                match self.building.started {
                    Some(t) => self.linger.saturating_sub(t.elapsed()),
                    None => IDLE_POLL.min(self.commit_interval),
                }
            };
            match self.consumer.poll(timeout) {
                Some(Ok(m)) => self.building.push(&m),
                Some(Err(e)) => {
                    if let KafkaError::MessageConsumptionFatal(_) = e {
                        break Err(ConnectorError::new(format!("Kafka consumer failed: {e}")));
                    }
                    // Transient (a broker away, a topic not created yet): librdkafka retries.
                    self.consumer.context().reporter.warn(format_args!("Kafka: {e}"));
                }
                None => {}
            }
            let lingered = self.building.started.is_some_and(|t| t.elapsed() >= self.linger);
            if self.building.payloads.len() >= self.batch_size || lingered {
                ready.push_back(self.building.finish());
            }
        };
        self.shutdown(ready, result)
    }

    /// Hand what is left to the flow, wait (bounded) for the acknowledgements, commit, close.
    fn shutdown(
        mut self,
        mut ready: VecDeque<Ready>,
        result: Result<(), ConnectorError>,
    ) -> Result<(), ConnectorError> {
        if result.is_ok() {
            if !self.building.payloads.is_empty() {
                ready.push_back(self.building.finish());
            }
            for r in ready.drain(..) {
                match self.tx.blocking_send(r.batch) {
                    Ok(()) => self.track(r.waiter, r.parts),
                    Err(failed) => failed.0.ack.fail("the flow stopped before the events were processed"),
                }
            }
        }
        // Not delivered: dropping them un-failed would count them as acknowledged.
        for r in ready {
            r.batch.ack.fail("the source stopped");
        }
        // The flow may finish once this closes.
        self.tx = mpsc::channel(1).0;
        // Read nothing more, but keep serving the group while the flow drains.
        self.set_paused(true);
        let deadline = Instant::now() + self.drain_timeout;
        while lock(&self.offsets).in_flight(None) > 0 && Instant::now() < deadline {
            // Messages fetched before the pause are not tracked, so never committed: dropped here,
            // read again later.
            let _ = self.consumer.poll(PAUSED_POLL);
        }
        let left = lock(&self.offsets).in_flight(None);
        if left > 0 {
            warn!(source = %self.name, batches = left, "stopping with unacknowledged batches; they will be read again");
        }
        self.commit(CommitMode::Sync);
        // Closing the consumer revokes its partitions: nothing is left to wait for or commit.
        lock(&self.offsets).clear();
        debug!(source = %self.name, "closing the consumer");
        result
    }

    /// Wait up to [`HANDOFF_WAIT`] for the flow to have room for a batch (none if it does not, or
    /// the source is stopping, or the flow is gone), committing what gets acknowledged meanwhile.
    fn wait_for_room(&self, last_commit: &mut Instant) -> Option<mpsc::Permit<'_, RawBatch>> {
        let deadline = Instant::now() + HANDOFF_WAIT;
        loop {
            let until_commit = self.commit_interval.saturating_sub(last_commit.elapsed());
            let slice =
                deadline.saturating_duration_since(Instant::now()).min(until_commit).max(Duration::from_millis(1));
            // A thread of the blocking pool, not a runtime thread: blocking on the runtime is allowed.
            let waited = self.runtime.block_on(async {
                tokio::select! {
                    permit = self.tx.reserve() => Some(permit.ok()),
                    _ = tokio::time::sleep(slice) => None,
                    _ = self.stop.cancelled() => Some(None),
                }
            });
            if let Some(permit) = waited {
                return permit;
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.commit_if_due(last_commit);
        }
    }

    /// Commit what is acknowledged once `commit_interval` has passed since the last commit.
    fn commit_if_due(&self, last_commit: &mut Instant) {
        if last_commit.elapsed() >= self.commit_interval {
            // Synchronous: one round trip per interval, and a refused commit (the group is
            // rebalancing) is known at once and offered again.
            self.commit(CommitMode::Sync);
            *last_commit = Instant::now();
        }
    }

    /// Follow a batch the flow took: its acknowledgement moves the commit point.
    fn track(&self, waiter: AckWaiter, parts: Vec<(Tp, i64)>) {
        let slots: Vec<Slot> = {
            let mut o = lock(&self.offsets);
            parts.iter().filter_map(|(tp, last)| o.register(tp, *last)).collect()
        };
        let offsets = self.offsets.clone();
        self.runtime.spawn(async move {
            let outcome = waiter.wait().await;
            lock(&offsets).resolve(&slots, outcome.as_ref().map(|_| ()).map_err(String::as_str));
        });
    }

    fn commit(&self, mode: CommitMode) {
        let commits = lock(&self.offsets).take_commits();
        if commits.is_empty() {
            return;
        }
        debug!(source = %self.name, ?commits, "committing");
        if let Err(e) = self.consumer.commit(&commit_list(&commits), mode) {
            warn!(source = %self.name, "offset commit failed: {e}");
            let mut o = lock(&self.offsets);
            for (tp, offset) in &commits {
                o.commit_failed(tp, *offset);
            }
        }
    }

    fn set_paused(&self, pause: bool) {
        let assignment = match self.consumer.assignment() {
            Ok(a) => a,
            Err(e) => return warn!(source = %self.name, "cannot read the assignment: {e}"),
        };
        let r = if pause { self.consumer.pause(&assignment) } else { self.consumer.resume(&assignment) };
        if let Err(e) = r {
            warn!(source = %self.name, "cannot {} partitions: {e}", if pause { "pause" } else { "resume" });
        }
    }
}

impl Building {
    fn push(&mut self, m: &BorrowedMessage<'_>) {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        // A message without a payload (a tombstone) is an empty event: the decoder rejects it
        // to `.errors` with the reason, and its offset is committed like any other.
        self.payloads.push(m.payload().unwrap_or_default());
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        match self.parts.iter_mut().find(|(tp, _)| tp.1 == partition && &*tp.0 == topic) {
            Some(p) => p.1 = offset,
            None => self.parts.push(((Arc::from(topic), partition), offset)),
        }
        self.meta.push(m);
    }

    fn finish(&mut self) -> Ready {
        self.started = None;
        let (ack, waiter) = Ack::new();
        let batch = self.payloads.finish(self.meta.finish(), ack);
        Ready { batch, waiter, parts: std::mem::take(&mut self.parts) }
    }
}

/// The metadata columns of the batch being built.
#[derive(Default)]
struct MetaBuilders {
    key: StringBuilder,
    topic: StringBuilder,
    partition: Int64Builder,
    offset: Int64Builder,
    timestamp: TimestampNanosecondBuilder,
    headers: StringBuilder,
    /// Whether any message of the batch had headers (else the column is all NULL, built cheaply).
    any_headers: bool,
    rows: usize,
}

impl MetaBuilders {
    fn push(&mut self, m: &BorrowedMessage<'_>) {
        self.rows += 1;
        match m.key() {
            Some(k) => self.key.append_value(String::from_utf8_lossy(k)),
            None => self.key.append_null(),
        }
        self.topic.append_value(m.topic());
        self.partition.append_value(i64::from(m.partition()));
        self.offset.append_value(m.offset());
        match m.timestamp().to_millis().and_then(|ms| ms.checked_mul(1_000_000)) {
            Some(ns) => self.timestamp.append_value(ns),
            None => self.timestamp.append_null(),
        }
        match m.headers() {
            Some(h) if h.count() > 0 => {
                self.any_headers = true;
                let mut obj = serde_json::Map::new();
                for header in h.iter() {
                    let value = header
                        .value
                        .map_or(serde_json::Value::Null, |v| String::from_utf8_lossy(v).into_owned().into());
                    obj.insert(header.key.to_string(), value);
                }
                self.headers.append_value(serde_json::Value::Object(obj).to_string());
            }
            _ => self.headers.append_null(),
        }
    }

    fn finish(&mut self) -> Vec<(&'static str, ArrayRef)> {
        let rows = std::mem::take(&mut self.rows);
        let headers: ArrayRef = if std::mem::take(&mut self.any_headers) {
            Arc::new(self.headers.finish())
        } else {
            self.headers = StringBuilder::new();
            arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, rows)
        };
        vec![
            ("key", Arc::new(self.key.finish()) as ArrayRef),
            ("topic", Arc::new(self.topic.finish())),
            ("partition", Arc::new(self.partition.finish())),
            ("offset", Arc::new(self.offset.finish())),
            ("timestamp", Arc::new(self.timestamp.finish().with_timezone("UTC"))),
            ("headers", headers),
        ]
    }
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller").field("name", &self.name).finish_non_exhaustive()
    }
}
