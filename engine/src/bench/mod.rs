//! `phoenix bench`: the shipped throughput benchmark (DESIGN §6).
//!
//! Generates `events` JSON events of about 150 bytes into a file, then runs
//! `file → where → select → route (3 ways) → 3 files` on the real engine and reports events/s,
//! MB/s, CPU seconds, events per CPU-second and peak RSS. Peak memory must not grow with the
//! input: run it with 1M and 10M events and compare.
//!
//! The other connectors' benches live beside it: [`elasticsearch`] (`--sink elasticsearch`),
//! [`kafka`] (`--sink kafka`) and [`s3`] (`--source s3`); [`reload`] (`--reload SECONDS`)
//! measures a flow replaced every second against one never replaced.

pub mod elasticsearch;
pub mod kafka;
pub mod reload;
pub mod s3;

use crate::EngineCatalog;
use crate::connectors::generate::write_record;
use crate::observability::metrics::Metrics;
use crate::run::{RunConfig, run};
use crate::taskgraph::{TaskGraph, node_labels};
use phoenix_dsl::MemoryLoader;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The events every bench generates and reads: one declaration for the three bench flows, so
/// what [`generate_input`] writes always fits each of them.
macro_rules! event_schema {
    () => {
        r#"schema Event {
  id: int,
  user: string,
  country: string,
  status: string,
  amount: float,
  items: int,
  ts: timestamp,
  session: string,
}
"#
    };
}
pub(crate) use event_schema;

/// The benchmark flow: `$SCHEMA` is the event schema. `path` options are set per run.
const FLOW: &str = r#"// phoenix bench: file -> where -> select -> route (3 ways) -> files
$SCHEMA
source events = file { path = "events.jsonl", format = ndjson } as Event
sink large = file { path = "large.jsonl", append = false }
sink medium = file { path = "medium.jsonl", append = false }
sink small = file { path = "small.jsonl", append = false }

events
  | where status != 'charlie-0' and amount >= 1.0
  | select id, user, country, amount * 1.19 as gross, items, ts
  | route {
      when gross > 800 => large,
      when gross > 300 => medium,
      else => small,
    }
"#;

/// The event schema of the file bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Scalars only: the one-pass decoder's path.
    Flat,
    /// The same fields plus a record and a list (the validator, then arrow-json).
    Nested,
}

impl Shape {
    /// The bench flow with this schema.
    pub fn flow(self) -> String {
        let schema = match self {
            Shape::Flat => event_schema!().to_string(),
            Shape::Nested => event_schema!().replace(
                "  session: string,\n}",
                "  session: string,\n  customer: { id: string, tier: string? },\n  tags: list<string>?,\n}",
            ),
        };
        FLOW.replace("$SCHEMA", &schema)
    }
}

/// One timed run of the flow over the generated input.
#[derive(Debug, Clone)]
pub struct Run {
    pub wall: Duration,
    pub cpu: Option<Duration>,
    /// Events the sinks wrote and flushed.
    pub written: u64,
}

#[derive(Debug)]
pub struct Report {
    pub shape: Shape,
    pub events: u64,
    pub input_bytes: u64,
    /// Events the sinks wrote in the last run (every run writes the same).
    pub written: u64,
    pub runs: Vec<Run>,
    pub peak_rss_kib: Option<u64>,
    pub workers: usize,
}

impl Report {
    fn per_cpu_second(&self, r: &Run) -> Option<f64> {
        r.cpu.map(|c| self.events as f64 / c.as_secs_f64().max(1e-9))
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "phoenix bench: file -> where -> select -> route (3 ways) -> 3 files")?;
        if self.shape == Shape::Nested {
            writeln!(f, "schema:        nested (a record and a list beside the scalars)")?;
        }
        writeln!(f, "machine:       {} cores, {}", cores(), cpu_model())?;
        writeln!(f, "workers:       {}", self.workers)?;
        writeln!(
            f,
            "events:        {} in ({:.1} MB, {:.0} bytes/event), {} written",
            self.events,
            self.input_bytes as f64 / 1e6,
            self.input_bytes as f64 / self.events.max(1) as f64,
            self.written
        )?;
        for (i, run) in self.runs.iter().enumerate() {
            let secs = run.wall.as_secs_f64().max(1e-9);
            let label = if self.runs.len() == 1 { String::new() } else { format!("run {}: ", i + 1) };
            writeln!(f, "{label}wall time:     {secs:.3} s")?;
            writeln!(
                f,
                "{label}throughput:    {:.0} events/s, {:.1} MB/s",
                self.events as f64 / secs,
                self.input_bytes as f64 / 1e6 / secs
            )?;
            match (run.cpu, self.per_cpu_second(run)) {
                (Some(cpu), Some(per)) => {
                    let c = cpu.as_secs_f64().max(1e-9);
                    writeln!(f, "{label}cpu time:      {c:.3} s ({:.2} cores busy)", c / secs)?;
                    writeln!(f, "{label}per core:      {per:.0} events per CPU-second")?;
                }
                _ => writeln!(f, "{label}cpu time:      n/a (no /proc on this system)")?,
            }
        }
        let mut per: Vec<f64> = self.runs.iter().filter_map(|r| self.per_cpu_second(r)).collect();
        if per.len() > 1 {
            // Shared machines vary from run to run; the median is the figure to compare.
            per.sort_by(f64::total_cmp);
            let mut walls: Vec<f64> = self.runs.iter().map(|r| self.events as f64 / r.wall.as_secs_f64()).collect();
            walls.sort_by(f64::total_cmp);
            writeln!(
                f,
                "median:        {:.0} events/s, {:.0} events per CPU-second (best {:.0}, worst {:.0})",
                median(&walls),
                median(&per),
                per[per.len() - 1],
                per[0]
            )?;
        }
        match self.peak_rss_kib {
            Some(kib) => writeln!(f, "peak RSS:      {:.1} MiB", kib as f64 / 1024.0),
            None => writeln!(f, "peak RSS:      n/a"),
        }
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Write `events` generated events of the flat bench schema to `path`; returns the bytes
/// written.
pub fn generate_input(path: &Path, events: u64, seed: u64) -> std::io::Result<u64> {
    generate(path, Shape::Flat, events, seed)
}

fn generate(path: &Path, shape: Shape, events: u64, seed: u64) -> std::io::Result<u64> {
    let catalog = EngineCatalog::new();
    let record = flow_record(&catalog, &shape.flow());
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut line = Vec::with_capacity(256);
    let mut bytes = 0;
    for _ in 0..events {
        line.clear();
        write_record(&mut line, &record, &mut rng, 0);
        line.push(b'\n');
        bytes += line.len() as u64 - 1;
        out.write_all(&line)?;
    }
    out.flush()?;
    // On disk before the clock starts: otherwise the kernel writes this input back while the
    // flow runs, and that work (and its throttling of the flow's own writes) is measured too.
    out.get_ref().sync_all()?;
    Ok(bytes)
}

/// The record the source of `flow` reads.
pub(crate) fn flow_record(catalog: &EngineCatalog, flow: &str) -> Arc<phoenix_dsl::types::Record> {
    let loader = MemoryLoader::new([("bench.phx".to_string(), flow.as_bytes().to_vec())]);
    let c = phoenix_dsl::compile("bench.phx", &loader, catalog);
    let flow = c.flow.expect("the bench flow parses");
    let source = flow.graph.node_indices().next().expect("a source");
    flow.graph[source].output.record.clone()
}

/// Generate the input in `dir`, run the flow `runs` times over it, report.
pub async fn run_bench(dir: &Path, shape: Shape, events: u64, workers: usize, runs: usize) -> anyhow::Result<Report> {
    let catalog = EngineCatalog::new();
    let input = dir.join("events.jsonl");
    let input_bytes = generate(&input, shape, events, 42)?;
    let flow = shape.flow();
    let loader = MemoryLoader::new([("bench.phx".to_string(), flow.as_bytes().to_vec())]);
    let c = phoenix_dsl::compile("bench.phx", &loader, &catalog);
    anyhow::ensure!(!c.has_errors(), "bench flow: {}", c.render(false));
    let plan = c.plan(&catalog).ok_or_else(|| anyhow::anyhow!("bench flow does not lower"))?;
    let mut report = Report { shape, events, input_bytes, written: 0, runs: Vec::new(), peak_rss_kib: None, workers };
    for _ in 0..runs.max(1) {
        let metrics = Arc::new(Metrics::new(node_labels(&plan, &c.sources)));
        let graph = TaskGraph::build(&plan, &c.sources, &metrics)?;
        let mut config = RunConfig::new(workers);
        let set = |node: &str, p: PathBuf| ((node.to_string(), "path".to_string()), p.display().to_string());
        config.settings.overrides.extend([
            set("events", input.clone()),
            set("large", dir.join("large.jsonl")),
            set("medium", dir.join("medium.jsonl")),
            set("small", dir.join("small.jsonl")),
        ]);
        let cpu_before = cpu_time();
        let started = Instant::now();
        run(graph, &catalog, metrics.clone(), config).await?;
        let wall = started.elapsed();
        let cpu = cpu_time().zip(cpu_before).map(|(a, b)| a.saturating_sub(b));
        let written = metrics.nodes.iter().filter(|n| n.title.starts_with("sink ")).map(|n| n.events_out.get()).sum();
        report.written = written;
        report.runs.push(Run { wall, cpu, written });
    }
    report.peak_rss_kib = peak_rss_kib();
    Ok(report)
}

/// User + system CPU time of this process, from /proc/self/stat (Linux).
pub(crate) fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux architecture we run on.
    Some(Duration::from_millis(ticks * 10))
}

/// Peak resident set size (VmHWM) in KiB.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_runs_and_accounts_for_every_event() {
        for (shape, sizes) in [(Shape::Flat, 120..=200), (Shape::Nested, 160..=280)] {
            let dir = std::env::temp_dir().join(format!("phoenix-bench-test-{shape:?}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let report = run_bench(&dir, shape, 20_000, 2, 2).await.unwrap();
            assert_eq!(report.runs.len(), 2);
            assert!(report.runs.iter().all(|r| r.written == report.written));
            assert!(report.to_string().contains("median:"));
            let lines = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap().lines().count() as u64;
            let out = lines("large.jsonl") + lines("medium.jsonl") + lines("small.jsonl");
            assert_eq!(out, report.written);
            // The filter drops some events and keeps most (every generated event is valid).
            assert!(out < 20_000 && out > 15_000, "{shape:?}: {out}");
            let avg = report.input_bytes / report.events;
            assert!(sizes.contains(&avg), "{shape:?}: events of {avg} bytes");
            std::fs::remove_dir_all(&dir).ok();
        }
    }
}
