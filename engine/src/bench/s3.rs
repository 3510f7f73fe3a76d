//! `phoenix bench --source s3`: S3 objects → where → file on the real engine, beside a plain
//! aws-sdk-s3 download of the same objects, in the same process against the same endpoint.
//!
//! The bench creates a bucket of its own at `--endpoint` (a local S3-compatible server such as
//! moto or MinIO), uploads the same ~150-byte events as `phoenix bench` as `objects` NDJSON
//! objects under `events/`, then runs, one after the other:
//!
//! - the plain download: ListObjectsV2 under the prefix, then GetObject of every key, 4 at once
//!   (the `s3` source's default `concurrency`), each body streamed to its end and its lines
//!   counted (no parsing: the least a reader of these objects does);
//! - Phoenix: the `s3` source (listing once: `poll_interval = 0s`, the default `on_done =
//!   "checkpoint"`, so it also writes its checkpoint object) → `where` → a `file` sink, until
//!   the flow ends by itself.
//!
//! Each is timed from its first request to its end (for Phoenix: every kept event written and
//! flushed). CPU and peak RSS are this process's over each run; the runs do not overlap, and
//! the peak RSS is reset between them. The S3 server is another process and is counted in
//! neither. The bucket and its objects stay (the test reads them back).

use crate::EngineCatalog;
use crate::bench::event_schema;
use crate::bench::kafka::{kept_by_where, reset_peak_rss};
use crate::bench::{cores, cpu_model, cpu_time, flow_record, peak_rss_kib};
use crate::connectors::generate::write_record;
use crate::observability::metrics::Metrics;
use crate::run::{RunConfig, run};
use crate::taskgraph::{TaskGraph, node_labels};
use anyhow::Context;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use futures::{StreamExt, TryStreamExt};
use phoenix_dsl::MemoryLoader;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the objects go in the bench's bucket.
pub const PREFIX: &str = "events/";

/// Objects downloaded at once by the plain loop: the `s3` source's default `concurrency`.
const CONCURRENCY: usize = 4;

/// The Phoenix flow: the `where` of `phoenix bench`. `{bucket}`, `{endpoint}` and `{output}`
/// are set per run.
pub const FLOW: &str = concat!(
    "// phoenix bench --source s3: s3 -> where -> file\n",
    event_schema!(),
    r#"
source events = s3 { bucket = "{bucket}", endpoint = "{endpoint}", prefix = "events/", format = ndjson, poll_interval = 0s } as Event
sink out = file { path = "{output}", append = false }

events | where status != 'charlie-0' and amount >= 1.0 | out
"#
);

/// What to run against.
#[derive(Debug, Clone)]
pub struct Config {
    /// The S3 endpoint URL (addressed path-style).
    pub endpoint: String,
    pub events: u64,
    /// How many objects the events are spread over.
    pub objects: u64,
    /// Workers per source for the Phoenix flow.
    pub workers: usize,
    /// Where the file sink writes `s3-out.jsonl`.
    pub dir: PathBuf,
}

/// One of the two runs.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Events read (lines, for the plain loop).
    pub events: u64,
    /// Bytes of the objects read (Phoenix: of the input, as uploaded).
    pub bytes: u64,
    pub wall: Duration,
    pub cpu: Option<Duration>,
    pub peak_rss_kib: Option<u64>,
}

#[derive(Debug)]
pub struct Report {
    pub endpoint: String,
    pub bucket: String,
    pub events: u64,
    pub objects: u64,
    /// Bytes of every object, newlines included.
    pub input_bytes: u64,
    /// Events the flow's `where` keeps (counted while generating them).
    pub kept: u64,
    /// Events Phoenix's file sink wrote.
    pub written: u64,
    /// Where they were written.
    pub output: PathBuf,
    pub workers: usize,
    pub plain: Phase,
    pub phoenix: Phase,
    /// Whether the peak RSS could be reset between the runs.
    pub rss_reset: bool,
}

impl Report {
    /// Phoenix's events per second as a share of the plain download's.
    pub fn ratio(&self) -> f64 {
        rate(self.phoenix.events, self.phoenix.wall) / rate(self.plain.events, self.plain.wall).max(1e-9)
    }
}

fn rate(n: u64, wall: Duration) -> f64 {
    n as f64 / wall.as_secs_f64().max(1e-9)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "phoenix bench: s3 -> where -> file, beside a plain aws-sdk-s3 download of the same objects")?;
        writeln!(f, "machine:       {} cores, {}", cores(), cpu_model())?;
        writeln!(f, "endpoint:      {} (bucket {}, prefix {PREFIX})", self.endpoint, self.bucket)?;
        writeln!(f, "workers:       {}", self.workers)?;
        writeln!(
            f,
            "events:        {} in {} objects ({:.1} MB, {:.0} bytes/event); the where keeps {}, written {}",
            self.events,
            self.objects,
            self.input_bytes as f64 / 1e6,
            self.input_bytes as f64 / self.events.max(1) as f64,
            self.kept,
            self.written
        )?;
        writeln!(f, "{:15}{:>22}{:>22}", "", "plain download", "phoenix")?;
        let row =
            |f: &mut std::fmt::Formatter<'_>, name: &str, a: String, b: String| writeln!(f, "{name:15}{a:>22}{b:>22}");
        let (p, x) = (&self.plain, &self.phoenix);
        row(f, "events read:", p.events.to_string(), x.events.to_string())?;
        let wall = |s: &Phase| format!("{:.3} s", s.wall.as_secs_f64());
        row(f, "wall time:", wall(p), wall(x))?;
        let eps = |s: &Phase| format!("{:.0} events/s", rate(s.events, s.wall));
        row(f, "throughput:", eps(p), eps(x))?;
        let mbs = |s: &Phase| format!("{:.1} MB/s", rate(s.bytes, s.wall) / 1e6);
        row(f, "", mbs(p), mbs(x))?;
        let cpu = |s: &Phase| match s.cpu {
            Some(c) => {
                let c = c.as_secs_f64();
                format!("{c:.3} s ({:.2} cores)", c / s.wall.as_secs_f64().max(1e-9))
            }
            None => "n/a".into(),
        };
        row(f, "cpu time:", cpu(p), cpu(x))?;
        let rss = |s: &Phase| s.peak_rss_kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        row(f, "peak RSS:", rss(p), rss(x))?;
        writeln!(f, "phoenix/plain: {:.0}% of the plain download's events/s", self.ratio() * 100.0)?;
        writeln!(f, "note:          both list the prefix and read every object, {CONCURRENCY} at once; Phoenix also")?;
        writeln!(f, "               parses, filters and writes the events and its checkpoint object. CPU and RSS")?;
        writeln!(
            f,
            "               are this process's (the S3 server's are not counted); {}",
            if self.rss_reset {
                "the peak RSS is reset before each run,\n               so it includes what the process already held"
            } else {
                "the peak RSS could not be reset: both show\n               the process's peak so far"
            }
        )
    }
}

/// A client for `endpoint` on the standard AWS chain (credentials, region), as the `s3`
/// connectors build theirs: path-style, as local servers serve buckets.
pub async fn client(endpoint: &str) -> Client {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        )
        .endpoint_url(endpoint)
        .load()
        .await;
    let mut conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true);
    if sdk.region().is_none() {
        conf = conf.region(Region::new("us-east-1"));
    }
    Client::from_conf(conf.build())
}

/// Create a bucket, upload the events, run the plain download and then Phoenix, report.
pub async fn run_bench(config: &Config) -> anyhow::Result<Report> {
    anyhow::ensure!(config.events > 0, "--events must be at least 1");
    anyhow::ensure!(config.objects > 0, "--objects must be at least 1");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    let bucket = format!("phoenix-bench-{}-{stamp}", std::process::id());
    let s3 = client(&config.endpoint).await;
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", crate::connectors::aws::describe(&e)))
        .with_context(|| format!("creating bucket {bucket} at {} (is the S3 server running?)", config.endpoint))?;
    let (input_bytes, kept) = upload(&s3, &bucket, config.events, config.objects).await?;

    let mut rss_reset = reset_peak_rss();
    let plain = download(&s3, &bucket, config.objects).await?;
    rss_reset &= reset_peak_rss();
    let output = config.dir.join("s3-out.jsonl");
    let (phoenix, written) = run_phoenix(config, &bucket, &output, input_bytes).await?;
    Ok(Report {
        endpoint: config.endpoint.clone(),
        bucket,
        events: config.events,
        objects: config.objects,
        input_bytes,
        kept,
        written,
        output,
        workers: config.workers,
        plain,
        phoenix,
        rss_reset,
    })
}

/// Upload `events` generated events as `objects` NDJSON objects of about equal size; returns
/// their bytes and how many events the flow's `where` keeps.
async fn upload(s3: &Client, bucket: &str, events: u64, objects: u64) -> anyhow::Result<(u64, u64)> {
    let catalog = EngineCatalog::new();
    let record = flow_record(&catalog, &crate::bench::Shape::Flat.flow());
    let mut rng = fastrand::Rng::with_seed(42);
    let (mut bytes, mut kept) = (0, 0);
    let mut bodies = Vec::new();
    let mut line = Vec::with_capacity(256);
    for o in 0..objects {
        // Spread the remainder over the first objects.
        let n = events / objects + u64::from(o < events % objects);
        let mut body = Vec::with_capacity(n as usize * 160);
        for _ in 0..n {
            line.clear();
            write_record(&mut line, &record, &mut rng, 0);
            kept += u64::from(kept_by_where(&line));
            body.extend_from_slice(&line);
            body.push(b'\n');
        }
        bytes += body.len() as u64;
        bodies.push((format!("{PREFIX}{o:06}.jsonl"), body));
    }
    futures::stream::iter(bodies)
        .map(|(key, body)| async move {
            s3.put_object()
                .bucket(bucket)
                .key(&key)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("uploading {key}: {}", crate::connectors::aws::describe(&e)))
        })
        .buffer_unordered(8)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok((bytes, kept))
}

/// List the prefix and stream every object (`objects` of them) to its end, [`CONCURRENCY`] at
/// once, counting lines.
async fn download(s3: &Client, bucket: &str, objects: u64) -> anyhow::Result<Phase> {
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut keys = Vec::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(PREFIX).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| anyhow::anyhow!("listing: {}", crate::connectors::aws::describe(&e)))?;
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(String::from)));
    }
    anyhow::ensure!(keys.len() as u64 == objects, "listed {} objects of the {objects} uploaded", keys.len());
    let (events, bytes) = futures::stream::iter(keys)
        .map(|key| async move {
            let resp = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("reading {key}: {}", crate::connectors::aws::describe(&e)))?;
            let mut body = resp.body;
            let (mut lines, mut bytes) = (0u64, 0u64);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.with_context(|| format!("reading {key}"))?;
                lines += memchr::memchr_iter(b'\n', &chunk).count() as u64;
                bytes += chunk.len() as u64;
            }
            anyhow::Ok((lines, bytes))
        })
        .buffer_unordered(CONCURRENCY)
        .try_fold((0u64, 0u64), |(l, b), (lines, bytes)| async move { Ok((l + lines, b + bytes)) })
        .await?;
    let wall = started.elapsed();
    let cpu = cpu_time().zip(cpu_before).map(|(a, b)| a.saturating_sub(b));
    Ok(Phase { events, bytes, wall, cpu, peak_rss_kib: peak_rss_kib() })
}

/// Run the flow to its end (it lists once); returns its phase and the events its sink wrote.
async fn run_phoenix(
    config: &Config,
    bucket: &str,
    output: &std::path::Path,
    input_bytes: u64,
) -> anyhow::Result<(Phase, u64)> {
    let catalog = EngineCatalog::new();
    let text = FLOW
        .replace("{bucket}", bucket)
        .replace("{endpoint}", &config.endpoint)
        .replace("{output}", &output.display().to_string());
    let loader = MemoryLoader::new([("bench-s3.phx".to_string(), text.into_bytes())]);
    let c = phoenix_dsl::compile("bench-s3.phx", &loader, &catalog);
    anyhow::ensure!(!c.has_errors(), "bench flow: {}", c.render(false));
    let plan = c.plan(&catalog).ok_or_else(|| anyhow::anyhow!("bench flow does not lower"))?;
    let metrics = Arc::new(Metrics::new(node_labels(&plan, &c.sources)));
    let graph = TaskGraph::build(&plan, &c.sources, &metrics)?;
    let node = |prefix: &str| metrics.nodes.iter().find(|n| n.title.starts_with(prefix)).cloned();
    let (source, sink) = node("source ").zip(node("sink ")).context("the bench flow has a source and a sink")?;

    let cpu_before = cpu_time();
    let started = Instant::now();
    run(graph, &catalog, metrics.clone(), RunConfig::new(config.workers)).await.context("the bench flow failed")?;
    let wall = started.elapsed();
    let cpu = cpu_time().zip(cpu_before).map(|(a, b)| a.saturating_sub(b));
    let errors: u64 = metrics.nodes.iter().map(|n| n.errors.get() + n.unhandled.get()).sum();
    anyhow::ensure!(errors == 0, "the bench flow reported {errors} failed events");
    let phase = Phase { events: source.events_in.get(), bytes: input_bytes, wall, cpu, peak_rss_kib: peak_rss_kib() };
    Ok((phase, sink.events_out.get()))
}
