//! `phoenix bench --sink kafka`: Kafka → where → Kafka against a real broker, beside a plain
//! rdkafka consume-and-produce loop on the same input, in the same run (DESIGN §6: within 80% of
//! what the raw client alone moves).
//!
//! The bench creates three topics of its own (input, plain loop's output, Phoenix's output),
//! fills the input with the same ~150-byte events as `phoenix bench`, then runs, one after the
//! other and each in a new consumer group reading from the beginning:
//!
//! - the plain loop: a `BaseConsumer` polled on one thread, every message handed to a
//!   `ThreadedProducer` configured like the `kafka` sink (idempotent, same linger and batch
//!   sizes), done when every input event's delivery report is in;
//! - Phoenix: the `kafka` source → `where` → the `kafka` sink on the real engine, done when the
//!   sink has flushed (every delivery report in) every event the `where` keeps.
//!
//! Both are timed from their first consumed event to their last delivery report; the time
//! before it (joining the group, the first fetch) is reported apart, as it does not depend on the
//! number of events. CPU and peak RSS are this process's over each whole run: the two runs do not
//! overlap, and the peak RSS is reset between them (`/proc/self/clear_refs`), so each peak
//! includes what the process already held. The broker is another process and is counted in
//! neither.

use crate::EngineCatalog;
use crate::bench::event_schema;
use crate::bench::{cores, cpu_model, cpu_time, peak_rss_kib};
use crate::connectors::generate::write_record;
use crate::observability::metrics::Metrics;
use crate::run::{RunConfig, run};
use crate::taskgraph::{TaskGraph, node_labels};
use anyhow::Context;
use phoenix_dsl::MemoryLoader;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Partitions of each topic the bench creates.
pub const PARTITIONS: i32 = 4;

/// A run that has not moved for this long is stuck (a broker gone, events lost): stop and say so.
const STALL: Duration = Duration::from_secs(60);

/// The Phoenix flow: the `where` of `phoenix bench` (it keeps almost every event, so both loops
/// write about as much). `{brokers}`, `{input}`, `{output}` and `{group}` are set per run.
pub const FLOW: &str = concat!(
    "// phoenix bench --sink kafka: kafka -> where -> kafka\n",
    event_schema!(),
    r#"
source events = kafka { brokers = "{brokers}", topic = "{input}", group = "{group}" } as Event
sink out = kafka { brokers = "{brokers}", topic = "{output}" }

events | where status != 'charlie-0' and amount >= 1.0 | out
"#
);

/// What to run against.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bootstrap brokers, `host:port[,host:port]`.
    pub brokers: String,
    pub events: u64,
    /// Workers per source for the Phoenix flow.
    pub workers: usize,
}

/// One of the two runs.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Input events read.
    pub consumed: u64,
    /// Events the broker confirmed (delivery reports).
    pub delivered: u64,
    /// From the start to the first consumed event (group join, first fetch).
    pub startup: Duration,
    /// From the first consumed event to the last delivery report.
    pub wall: Duration,
    pub cpu: Option<Duration>,
    pub peak_rss_kib: Option<u64>,
}

#[derive(Debug)]
pub struct Report {
    pub brokers: String,
    pub events: u64,
    pub input_bytes: u64,
    /// Events the flow's `where` keeps (counted while generating them).
    pub kept: u64,
    pub workers: usize,
    pub topics: Topics,
    pub plain: Phase,
    pub phoenix: Phase,
    /// Whether the peak RSS could be reset between the runs (else both are the process's peak).
    pub rss_reset: bool,
}

/// The topics of one bench run.
#[derive(Debug, Clone)]
pub struct Topics {
    pub input: String,
    pub plain: String,
    pub phoenix: String,
}

impl Report {
    /// Phoenix's input events per second as a share of the plain loop's.
    pub fn ratio(&self) -> f64 {
        rate(self.phoenix.consumed, self.phoenix.wall) / rate(self.plain.consumed, self.plain.wall).max(1e-9)
    }
}

fn rate(events: u64, wall: Duration) -> f64 {
    events as f64 / wall.as_secs_f64().max(1e-9)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes_per_event = self.input_bytes as f64 / self.events.max(1) as f64;
        writeln!(f, "phoenix bench: kafka -> where -> kafka, beside a plain rdkafka consume-and-produce loop")?;
        writeln!(f, "machine:       {} cores, {}", cores(), cpu_model())?;
        writeln!(f, "broker:        {} ({PARTITIONS} partitions per topic)", self.brokers)?;
        writeln!(f, "workers:       {}", self.workers)?;
        writeln!(
            f,
            "events:        {} in ({:.1} MB, {bytes_per_event:.0} bytes/event); the where keeps {}",
            self.events,
            self.input_bytes as f64 / 1e6,
            self.kept
        )?;
        writeln!(f, "{:15}{:>22}{:>22}", "", "plain loop", "phoenix")?;
        let row =
            |f: &mut std::fmt::Formatter<'_>, name: &str, a: String, b: String| writeln!(f, "{name:15}{a:>22}{b:>22}");
        let (p, x) = (&self.plain, &self.phoenix);
        row(f, "consumed:", p.consumed.to_string(), x.consumed.to_string())?;
        row(f, "delivered:", p.delivered.to_string(), x.delivered.to_string())?;
        let startup = |s: &Phase| format!("{:.3} s", s.startup.as_secs_f64());
        row(f, "first event:", startup(p), startup(x))?;
        let wall = |s: &Phase| format!("{:.3} s", s.wall.as_secs_f64());
        row(f, "wall time:", wall(p), wall(x))?;
        let eps = |s: &Phase| format!("{:.0} events/s", rate(s.consumed, s.wall));
        row(f, "throughput:", eps(p), eps(x))?;
        let mbs = |s: &Phase| format!("{:.1} MB/s", rate(s.consumed, s.wall) * bytes_per_event / 1e6);
        row(f, "", mbs(p), mbs(x))?;
        let cpu = |s: &Phase| match s.cpu {
            Some(c) => {
                let whole = (s.startup + s.wall).as_secs_f64().max(1e-9);
                format!("{:.3} s ({:.2} cores)", c.as_secs_f64(), c.as_secs_f64() / whole)
            }
            None => "n/a".into(),
        };
        row(f, "cpu time:", cpu(p), cpu(x))?;
        let rss = |s: &Phase| s.peak_rss_kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        row(f, "peak RSS:", rss(p), rss(x))?;
        let ratio = self.ratio();
        writeln!(
            f,
            "phoenix/plain: {:.0}% of the plain loop's events/s (target: at least 80%{})",
            ratio * 100.0,
            if ratio >= 0.8 { ", met" } else { ", not met" }
        )?;
        writeln!(f, "note:          wall time and throughput run from the first consumed event to the last")?;
        writeln!(f, "               delivery report; CPU and RSS are this process's over the whole run (the broker's")?;
        writeln!(
            f,
            "               are not counted); the runs do not overlap, and {}",
            if self.rss_reset {
                "the peak RSS is reset before each,\n               so it includes what the process already held"
            } else {
                "the peak RSS could not be reset: both show\n               the process's peak so far"
            }
        )
    }
}

/// Create the topics, fill the input, run the plain loop and then Phoenix, report.
pub async fn run_bench(config: &Config) -> anyhow::Result<Report> {
    anyhow::ensure!(config.events > 0, "--events must be at least 1");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    let prefix = format!("phoenix-bench-{}-{stamp}", std::process::id());
    let topics = Topics {
        input: format!("{prefix}-in"),
        plain: format!("{prefix}-plain"),
        phoenix: format!("{prefix}-phoenix"),
    };
    let admin: AdminClient<DefaultClientContext> = base_config(&config.brokers)
        .create()
        .with_context(|| format!("creating a Kafka admin client for {}", config.brokers))?;
    let all = [topics.input.as_str(), topics.plain.as_str(), topics.phoenix.as_str()];
    create_topics(&admin, &all).await?;
    // The topics stay: after a topic is deleted, tansu 0.6's metadata answers crash librdkafka
    // clients (a segfault in its metadata cache), so the next run would fail.
    measure(config, &topics, &prefix).await
}

async fn measure(config: &Config, topics: &Topics, prefix: &str) -> anyhow::Result<Report> {
    let (brokers, events) = (config.brokers.clone(), config.events);
    let input = topics.input.clone();
    let (input_bytes, kept) = tokio::task::spawn_blocking(move || fill(&brokers, &input, events)).await??;

    let mut rss_reset = reset_peak_rss();
    let (brokers, input, output, group) =
        (config.brokers.clone(), topics.input.clone(), topics.plain.clone(), format!("{prefix}-plain"));
    let plain = tokio::task::spawn_blocking(move || plain_loop(&brokers, &input, &output, &group, events)).await??;

    rss_reset &= reset_peak_rss();
    let phoenix = run_phoenix(config, topics, &format!("{prefix}-phoenix"), kept).await?;
    Ok(Report {
        brokers: config.brokers.clone(),
        events,
        input_bytes,
        kept,
        workers: config.workers,
        topics: topics.clone(),
        plain,
        phoenix,
        rss_reset,
    })
}

/// Reset this process's peak RSS (VmHWM) to its current RSS (Linux 4.0+).
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn base_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("client.id", "phoenix-bench");
    c
}

/// The producer settings of the `kafka` sink with its defaults (`sink.rs`), so the plain loop
/// produces the way Phoenix does.
fn producer_config(brokers: &str) -> ClientConfig {
    let mut c = base_config(brokers);
    c.set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("enable.idempotence", "true")
        .set("compression.type", "none")
        .set("message.timeout.ms", "30000")
        .set("message.max.bytes", (1_048_576 + 64 * 1024).to_string());
    c
}

async fn create_topics(admin: &AdminClient<DefaultClientContext>, names: &[&str]) -> anyhow::Result<()> {
    let new: Vec<NewTopic<'_>> =
        names.iter().map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .context("creating the bench's topics (is the broker at --brokers running?)")?;
    for r in results {
        if let Err((topic, e)) = r {
            anyhow::bail!("creating topic `{topic}`: {e}");
        }
    }
    // Wait until the broker lists every partition, so the first produce finds them.
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in names {
        loop {
            let md = admin.inner().fetch_metadata(Some(t), Duration::from_secs(5));
            if md.is_ok_and(|m| m.topics().first().is_some_and(|x| x.partitions().len() == PARTITIONS as usize)) {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "topic `{t}` does not show {PARTITIONS} partitions within 30s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Counts delivery reports.
#[derive(Debug, Default)]
struct Counting {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<KafkaError>>,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                self.first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| e.clone());
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

impl Counting {
    fn check(&self) -> anyhow::Result<()> {
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = self.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            anyhow::bail!(
                "{failed} events were not delivered; the first: {}",
                first.map_or(String::new(), |e| e.to_string())
            );
        }
        Ok(())
    }
}

/// Send `record`, waiting while librdkafka's queue is full (for at most [`STALL`]: a broker
/// that takes nothing for that long makes the bench fail instead of hang).
fn send<'a>(producer: &ThreadedProducer<Counting>, mut record: BaseRecord<'a, (), [u8]>) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                anyhow::ensure!(
                    started.elapsed() < STALL,
                    "the broker took no input event for {STALL:?} (librdkafka's queue stayed full)"
                );
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Write `events` generated events to `topic`, round robin over its partitions; returns their
/// bytes and how many of them the flow's `where` keeps.
fn fill(brokers: &str, topic: &str, events: u64) -> anyhow::Result<(u64, u64)> {
    let catalog = EngineCatalog::new();
    let record = crate::bench::flow_record(&catalog, &crate::bench::Shape::Flat.flow());
    let producer: ThreadedProducer<Counting> =
        producer_config(brokers).create_with_context(Counting::default()).context("creating the Kafka producer")?;
    let counting = producer.context().clone();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut line = Vec::with_capacity(256);
    let (mut bytes, mut kept) = (0, 0);
    for i in 0..events {
        line.clear();
        write_record(&mut line, &record, &mut rng, 0);
        bytes += line.len() as u64;
        kept += u64::from(kept_by_where(&line));
        send(&producer, BaseRecord::to(topic).payload(&line[..]).partition((i % PARTITIONS as u64) as i32))?;
    }
    producer.flush(Duration::from_secs(120)).context("writing the input events")?;
    counting.check()?;
    let delivered = counting.delivered.load(Ordering::Relaxed);
    anyhow::ensure!(delivered == events, "only {delivered} of {events} input events were delivered");
    Ok((bytes, kept))
}

/// The flow's `where status != 'charlie-0' and amount >= 1.0`, so the bench knows when Phoenix
/// is done without trusting the flow's own counters.
pub(crate) fn kept_by_where(event: &[u8]) -> bool {
    let v: serde_json::Value = serde_json::from_slice(event).unwrap_or_default();
    v["status"].as_str().is_some_and(|s| s != "charlie-0") && v["amount"].as_f64().is_some_and(|a| a >= 1.0)
}

/// Consume `input` from the beginning in a new group and produce every message to `output`,
/// until every one of `events` is delivered.
fn plain_loop(brokers: &str, input: &str, output: &str, group: &str, events: u64) -> anyhow::Result<Phase> {
    let producer: ThreadedProducer<Counting> =
        producer_config(brokers).create_with_context(Counting::default()).context("creating the Kafka producer")?;
    let counting = producer.context().clone();
    // The `kafka` source's consumer settings, except that offsets are committed by librdkafka
    // (what a plain loop would do), at the source's default interval.
    let consumer: BaseConsumer = base_config(brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.queue.backoff.ms", "10")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .create()
        .context("creating the Kafka consumer")?;
    let cpu_before = cpu_time();
    let started = Instant::now();
    consumer.subscribe(&[input]).with_context(|| format!("subscribing to {input}"))?;
    let mut consumed = 0u64;
    let mut first: Option<Instant> = None;
    let mut last_progress = (Instant::now(), 0u64);
    loop {
        let delivered = counting.delivered.load(Ordering::Relaxed) + counting.failed.load(Ordering::Relaxed);
        if consumed >= events && delivered >= consumed {
            break;
        }
        if delivered + consumed != last_progress.1 {
            last_progress = (Instant::now(), delivered + consumed);
        } else if last_progress.0.elapsed() > STALL {
            anyhow::bail!("the plain loop is stuck: {consumed} of {events} consumed, {delivered} delivered");
        }
        if consumed >= events {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                send(&producer, BaseRecord::to(output).payload(m.payload().unwrap_or_default()))?;
                consumed += 1;
            }
            Some(Err(e)) => tracing::debug!("plain loop: {e}"),
            None => {}
        }
    }
    let (end, first) = (Instant::now(), first.unwrap_or(started));
    let cpu = cpu_time().zip(cpu_before).map(|(a, b)| a.saturating_sub(b));
    counting.check()?;
    Ok(Phase {
        consumed,
        delivered: counting.delivered.load(Ordering::Relaxed),
        startup: first - started,
        wall: end - first,
        cpu,
        peak_rss_kib: peak_rss_kib(),
    })
}

/// Run the flow until its sink has delivered the `kept` events, then stop it.
async fn run_phoenix(config: &Config, topics: &Topics, group: &str, kept: u64) -> anyhow::Result<Phase> {
    let catalog = EngineCatalog::new();
    let text = FLOW
        .replace("{brokers}", &config.brokers)
        .replace("{input}", &topics.input)
        .replace("{output}", &topics.phoenix)
        .replace("{group}", group);
    let loader = MemoryLoader::new([("bench-kafka.phx".to_string(), text.into_bytes())]);
    let c = phoenix_dsl::compile("bench-kafka.phx", &loader, &catalog);
    anyhow::ensure!(!c.has_errors(), "bench flow: {}", c.render(false));
    let plan = c.plan(&catalog).ok_or_else(|| anyhow::anyhow!("bench flow does not lower"))?;
    let metrics = Arc::new(Metrics::new(node_labels(&plan, &c.sources)));
    let graph = TaskGraph::build(&plan, &c.sources, &metrics)?;
    let run_config = RunConfig::new(config.workers);
    let shutdown = run_config.shutdown.clone();
    let node = |prefix: &str| metrics.nodes.iter().find(|n| n.title.starts_with(prefix)).cloned();
    let (source, sink) = node("source ").zip(node("sink ")).context("the bench flow has a source and a sink")?;

    let cpu_before = cpu_time();
    let started = Instant::now();
    let m = metrics.clone();
    let mut flow = tokio::spawn(async move { run(graph, &catalog, m, run_config).await });
    let mut first: Option<Instant> = None;
    let mut last_progress = (Instant::now(), 0u64);
    let outcome = loop {
        let (consumed, delivered) = (source.events_in.get(), sink.events_out.get());
        if consumed > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if delivered >= kept && consumed >= config.events {
            break Ok(());
        }
        if consumed + delivered != last_progress.1 {
            last_progress = (Instant::now(), consumed + delivered);
        } else if last_progress.0.elapsed() > STALL {
            break Err(anyhow::anyhow!(
                "Phoenix is stuck: {consumed} of {} consumed, {delivered} of {kept} delivered",
                config.events
            ));
        }
        tokio::select! {
            r = &mut flow => break Err(match r {
                Ok(Ok(())) => anyhow::anyhow!("the flow stopped before it delivered every event"),
                Ok(Err(e)) => anyhow::Error::from(e).context("the bench flow failed"),
                Err(e) => anyhow::anyhow!("the bench flow panicked: {e}"),
            }),
            // Often enough to add little to a run of seconds.
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
    };
    let (end, first) = (Instant::now(), first.unwrap_or(started));
    let cpu = cpu_time().zip(cpu_before).map(|(a, b)| a.saturating_sub(b));
    let peak = peak_rss_kib();
    outcome?;
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(60), flow).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(anyhow::Error::from(e).context("the bench flow failed while stopping")),
        Ok(Err(e)) => anyhow::bail!("the bench flow panicked: {e}"),
        Err(_) => anyhow::bail!("the bench flow did not stop within 60s"),
    }
    let errors: u64 = metrics.nodes.iter().map(|n| n.errors.get() + n.unhandled.get()).sum();
    anyhow::ensure!(errors == 0, "the bench flow reported {errors} failed events");
    Ok(Phase {
        consumed: source.events_in.get(),
        delivered: sink.events_out.get(),
        startup: first - started,
        wall: end - first,
        cpu,
        peak_rss_kib: peak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;

    /// Both loops on librdkafka's mock cluster, which cannot create topics through the admin
    /// API, so the test makes them (`tests/bench_kafka.rs` runs the whole bench on tansu).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_loops_account_for_every_event_on_a_mock_cluster() {
        let cluster = MockCluster::new(1).unwrap();
        let topics = Topics { input: "in".into(), plain: "plain".into(), phoenix: "phoenix".into() };
        for t in [&topics.input, &topics.plain, &topics.phoenix] {
            cluster.create_topic(t, PARTITIONS, 1).unwrap();
        }
        let config = Config { brokers: cluster.bootstrap_servers(), events: 3_000, workers: 1 };
        let report = measure(&config, &topics, "mock").await.unwrap();
        assert_eq!((report.plain.consumed, report.plain.delivered), (3_000, 3_000), "{report}");
        assert_eq!((report.phoenix.consumed, report.phoenix.delivered), (3_000, report.kept), "{report}");
        assert!(report.kept > 2_900, "{report}");
        eprintln!("{report}");
    }
}
