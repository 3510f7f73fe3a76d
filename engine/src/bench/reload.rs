//! `phoenix bench --reload SECONDS`: what make-before-break replacement costs. The same flow
//! (`generate` → where → select → file) runs for SECONDS twice: never replaced, and replaced
//! by a new version of itself every second through [`crate::swap`], exactly as a PUT of
//! `phoenix serve` or a SIGHUP of `phoenix run` replaces it. Reported: events/s written each
//! way (counted by the sink over every version, up to the end of the last drain) and how long
//! each replacement took from launch to the old version drained.
//!
//! The source never waits, so the queues are full when a version drains: a replacement takes
//! as long as writing what they hold, and the next one starts a second after it ended (so a
//! machine slower than that replaces less often than every second; the count is printed).

use crate::EngineCatalog;
use crate::connectors::Owner;
use crate::observability::metrics::Metrics;
use crate::observability::readiness::Readiness;
use crate::run::RunConfig;
use crate::swap;
use crate::taskgraph::node_labels;
use phoenix_dsl::MemoryLoader;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FLOW: &str = r#"// phoenix bench --reload: generate -> where -> select -> file
$SCHEMA
source events = generate {} as Event
sink out = file { path = "out.jsonl", append = false }

events
  | where status != 'charlie-0' and amount >= 1.0
  | select id, user, country, amount * 1.19 as gross, items, ts
  | out
"#;

/// One way of running the flow for the measured time.
#[derive(Debug, Clone)]
pub struct Phase {
    pub wall: Duration,
    pub written: u64,
    /// How long each replacement took (launch of the new version to the old one drained).
    pub swaps: Vec<Duration>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.written as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug)]
pub struct Report {
    pub workers: usize,
    pub never: Phase,
    pub every_second: Phase,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "phoenix bench --reload: generate -> where -> select -> file, replaced every second vs never")?;
        writeln!(f, "machine:       {} cores, {}", super::cores(), super::cpu_model())?;
        writeln!(f, "workers:       {}", self.workers)?;
        for (label, p) in [("never", &self.never), ("every second", &self.every_second)] {
            writeln!(
                f,
                "{label:<14} {:.0} events/s ({} events in {:.2} s, {} replacements)",
                p.rate(),
                p.written,
                p.wall.as_secs_f64(),
                p.swaps.len()
            )?;
        }
        let mut swaps: Vec<f64> = self.every_second.swaps.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        swaps.sort_by(f64::total_cmp);
        if let (Some(first), Some(last)) = (swaps.first(), swaps.last()) {
            writeln!(
                f,
                "replacement:   median {:.1} ms (fastest {first:.1}, slowest {last:.1})",
                super::median(&swaps)
            )?;
        }
        writeln!(
            f,
            "ratio:         {:.2} of the throughput never replaced",
            self.every_second.rate() / self.never.rate().max(1e-9)
        )
    }
}

/// Run the flow for `seconds` never replaced, then for `seconds` replaced every second.
pub async fn run_bench(dir: &Path, seconds: u64, workers: usize) -> anyhow::Result<Report> {
    let never = phase(dir, seconds, workers, false).await?;
    let every_second = phase(dir, seconds, workers, true).await?;
    Ok(Report { workers, never, every_second })
}

async fn phase(dir: &Path, seconds: u64, workers: usize, replace: bool) -> anyhow::Result<Phase> {
    let catalog = Arc::new(EngineCatalog::new());
    let flow = FLOW.replace("$SCHEMA", super::event_schema!());
    let loader = MemoryLoader::new([("bench.phx".to_string(), flow.as_bytes().to_vec())]);
    let c = phoenix_dsl::compile("bench.phx", &loader, &*catalog);
    anyhow::ensure!(!c.has_errors(), "bench flow: {}", c.render(false));
    let plan = c.plan(&*catalog).ok_or_else(|| anyhow::anyhow!("bench flow does not lower"))?;
    let root = Metrics::new([]);
    let ready = Readiness::new();
    let config = || {
        let mut config = RunConfig::new(workers);
        config.owner = Owner::version_of("bench");
        let out = dir.join("reload-out.jsonl").display().to_string();
        config.settings.overrides.insert(("out".into(), "path".into()), out);
        config
    };
    let sink = node_labels(&plan, &c.sources).iter().position(|(title, _)| title.starts_with("sink "));
    let sink = sink.ok_or_else(|| anyhow::anyhow!("bench flow has no sink"))?;
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds.max(1));
    let mut current = swap::launch(&plan, &c.sources, &catalog, &root, None, config())?;
    ready.add_child(current.readiness.clone());
    // Every version counts into the same series (the nodes are the same), so this counter
    // holds what every version wrote.
    let written = current.metrics.nodes[sink].clone();
    let mut swaps = Vec::new();
    // Replaced: a new version a second after the last replacement ended, until the end (at
    // least once, however slow the machine).
    if replace {
        loop {
            tokio::time::sleep_until((Instant::now() + Duration::from_secs(1)).min(end).into()).await;
            let at = Instant::now();
            let next = swap::launch(&plan, &c.sources, &catalog, &root, Some(&current.metrics), config())?;
            current = match swap::replace(current, next, &ready).await {
                Ok((next, old)) => {
                    old.map_err(|e| anyhow::anyhow!("a replaced version failed: {e}"))?;
                    next
                }
                Err((_, e)) => anyhow::bail!("a new version failed to start: {e}"),
            };
            swaps.push(at.elapsed());
            if Instant::now() >= end {
                break;
            }
        }
    }
    tokio::time::sleep_until(end.into()).await;
    current.stop(&ready, None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Phase { wall: started.elapsed(), written: written.events_out.get(), swaps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_phases_write_and_the_replaced_one_swaps_every_second() {
        let dir = std::env::temp_dir().join(format!("phoenix-bench-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = run_bench(&dir, 3, 1).await.unwrap();
        assert!(report.never.swaps.is_empty());
        assert!(!report.every_second.swaps.is_empty(), "{report}");
        assert!(report.never.written > 0 && report.every_second.written > 0, "{report}");
        // The file holds whole lines: what the last phase's versions wrote, in one file.
        let text = std::fs::read_to_string(dir.join("reload-out.jsonl")).unwrap();
        assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
        assert_eq!(text.lines().count() as u64, report.every_second.written);
        assert!(report.to_string().contains("replacement:   median"), "{report}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
