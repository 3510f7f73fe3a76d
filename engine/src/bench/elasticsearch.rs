//! `phoenix bench --sink elasticsearch`: events per second into a `_bulk` endpoint.
//!
//! Generates the same ~150-byte events as `phoenix bench` into a file, then runs
//! `file → elasticsearch` on the real engine and the official client against the in-process
//! test server ([`crate::connectors::elasticsearch::test_server`], on 127.0.0.1, parsing every
//! action and document like a cluster would but keeping only counts, so the peak RSS is the
//! engine's). Reports events/s, MB/s, requests, bytes and events per bulk request, CPU and peak
//! RSS. The server shares the machine's cores with the engine, so the figure is a lower bound
//! for the sink itself.

use crate::EngineCatalog;
use crate::bench::event_schema;
use crate::bench::{cores, cpu_model, cpu_time, generate_input, peak_rss_kib};
use crate::connectors::elasticsearch::test_server;
use crate::observability::metrics::Metrics;
use crate::run::{RunConfig, run};
use crate::taskgraph::{TaskGraph, node_labels};
use phoenix_dsl::MemoryLoader;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The benchmark flow; `path` and `url` are set per run. The bulk bounds are the defaults.
pub const FLOW: &str = concat!(
    "// phoenix bench --sink elasticsearch: file -> elasticsearch\n",
    event_schema!(),
    r#"
source events = file { path = "events.jsonl", format = ndjson } as Event
sink search = elasticsearch {
  url = "http://127.0.0.1:9200",
  index = "bench-" || lower(country),
  id = session,
}

events | search
"#
);

#[derive(Debug)]
pub struct Report {
    pub events: u64,
    pub input_bytes: u64,
    pub indexed: u64,
    pub requests: u64,
    pub body_bytes: u64,
    pub wall: Duration,
    pub cpu: Option<Duration>,
    pub peak_rss_kib: Option<u64>,
    pub workers: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.wall.as_secs_f64().max(1e-9);
        let requests = self.requests.max(1) as f64;
        writeln!(f, "phoenix bench: file -> elasticsearch (_bulk test server on 127.0.0.1, same process)")?;
        writeln!(f, "machine:       {} cores, {}", cores(), cpu_model())?;
        writeln!(f, "workers:       {}", self.workers)?;
        writeln!(
            f,
            "events:        {} in ({:.1} MB, {:.0} bytes/event), {} indexed",
            self.events,
            self.input_bytes as f64 / 1e6,
            self.input_bytes as f64 / self.events.max(1) as f64,
            self.indexed
        )?;
        writeln!(f, "wall time:     {secs:.3} s")?;
        writeln!(
            f,
            "throughput:    {:.0} events/s, {:.1} MB/s of events, {:.1} MB/s of bulk bodies",
            self.events as f64 / secs,
            self.input_bytes as f64 / 1e6 / secs,
            self.body_bytes as f64 / 1e6 / secs
        )?;
        writeln!(
            f,
            "bulk requests: {} ({:.0} bytes and {:.0} events per request)",
            self.requests,
            self.body_bytes as f64 / requests,
            self.indexed as f64 / requests
        )?;
        match self.cpu {
            Some(cpu) => {
                writeln!(f, "cpu time:      {:.3} s ({:.2} cores busy)", cpu.as_secs_f64(), cpu.as_secs_f64() / secs)?
            }
            None => writeln!(f, "cpu time:      n/a (no /proc on this system)")?,
        }
        match self.peak_rss_kib {
            Some(kib) => writeln!(f, "peak RSS:      {:.1} MiB", kib as f64 / 1024.0),
            None => writeln!(f, "peak RSS:      n/a"),
        }
    }
}

/// Generate the input in `dir`, run the flow against a fresh test server, report.
pub async fn run_bench(dir: &Path, events: u64, workers: usize) -> anyhow::Result<Report> {
    let catalog = EngineCatalog::new();
    let input = dir.join("events.jsonl");
    let input_bytes = generate_input(&input, events, 42)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let es = test_server::spawn(stop.clone().cancelled_owned()).await?;
    es.discard_documents(true);
    let loader = MemoryLoader::new([("bench-es.phx".to_string(), FLOW.as_bytes().to_vec())]);
    let c = phoenix_dsl::compile("bench-es.phx", &loader, &catalog);
    anyhow::ensure!(!c.has_errors(), "bench flow: {}", c.render(false));
    let plan = c.plan(&catalog).ok_or_else(|| anyhow::anyhow!("bench flow does not lower"))?;
    let metrics = Arc::new(Metrics::new(node_labels(&plan, &c.sources)));
    let graph = TaskGraph::build(&plan, &c.sources, &metrics)?;
    let mut config = RunConfig::new(workers);
    let set = |node: &str, option: &str, value: String| ((node.to_string(), option.to_string()), value);
    config
        .settings
        .overrides
        .extend([set("events", "path", input.display().to_string()), set("search", "url", es.url())]);
    let cpu_before = cpu_time();
    let started = Instant::now();
    let result = run(graph, &catalog, metrics.clone(), config).await;
    let wall = started.elapsed();
    let cpu = cpu_time().zip(cpu_before).map(|(a, b)| a.saturating_sub(b));
    stop.cancel();
    result?;
    let stats = es.stats();
    let indexed = metrics.nodes.iter().filter(|n| n.title.starts_with("sink ")).map(|n| n.events_out.get()).sum();
    Ok(Report {
        events,
        input_bytes,
        indexed,
        requests: stats.requests,
        body_bytes: stats.body_bytes,
        wall,
        cpu,
        peak_rss_kib: peak_rss_kib(),
        workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_indexes_every_event_in_bounded_requests() {
        let dir = std::env::temp_dir().join(format!("phoenix-bench-es-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = run_bench(&dir, 5_000, 1).await.unwrap();
        assert_eq!(report.indexed, 5_000);
        // bulk_max_events defaults to 1000: at least 5 requests, each at most 5 MiB.
        assert!(report.requests >= 5, "{report:?}");
        assert!(report.body_bytes / report.requests <= 5 << 20, "{report:?}");
        assert!(report.to_string().contains("bytes and"), "{report}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
