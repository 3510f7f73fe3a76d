//! The engine's side of a sink that flushes in the background (`Sink::begin_flush`, as the
//! `kafka` sink does): several flushes in flight while the next groups are written, events
//! held (not acknowledged) until their flush is settled, and a flush that fails as a whole
//! written again, never lost and never counted twice.

mod support;

use phoenix_engine::connectors::{BoxFuture, Flushing, Sink, WriteError};
use phoenix_engine::exec::batch::SinkBatch;
use phoenix_engine::run::RunConfig;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{start, temp};

#[derive(Debug, Default)]
struct Log {
    /// Events of each flush begun, by flush number.
    flushes: Vec<Vec<i64>>,
    /// Flush numbers that succeeded.
    confirmed: Vec<usize>,
    in_flight: usize,
    most_in_flight: usize,
}

/// Holds what is written until a flush begins; flush `k` resolves once flush `k + 1` has begun
/// (or after a moment, for the last), so flushes overlap whenever the engine lets them. Flush
/// number `fail` fails as a whole.
struct Background {
    log: Arc<Mutex<Log>>,
    pending: Vec<i64>,
    fail: usize,
}

fn id_of(payload: &[u8]) -> i64 {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    v["id"].as_i64().unwrap()
}

impl Sink for Background {
    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            self.pending.extend((0..batch.len()).map(|i| id_of(batch.payloads.value(i))));
            Ok(())
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), WriteError>> {
        panic!("the engine waits on a flush only when begin_flush declines");
    }

    fn begin_flush(&mut self) -> Option<Flushing> {
        let (log, fail) = (self.log.clone(), self.fail);
        let k = {
            let mut l = log.lock().unwrap();
            l.flushes.push(std::mem::take(&mut self.pending));
            l.in_flight += 1;
            l.most_in_flight = l.most_in_flight.max(l.in_flight);
            l.flushes.len() - 1
        };
        Some(Box::pin(async move {
            for _ in 0..50 {
                if log.lock().unwrap().flushes.len() > k + 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut l = log.lock().unwrap();
            l.in_flight -= 1;
            if k == fail {
                return Err(WriteError::Retryable("the service went away".into()));
            }
            l.confirmed.push(k);
            Ok(())
        }))
    }

    fn batching(&self) -> phoenix_engine::connectors::Batching {
        // One source batch per group, so there are many flushes.
        phoenix_engine::connectors::Batching { max_batches: 1, ..Default::default() }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_flushes_overlap_and_a_failed_one_is_written_again() {
    let dir = temp("sink-runner-background");
    let input = dir.join("in.jsonl");
    let n = 2_000;
    std::fs::write(&input, (0..n).map(|i| format!("{{\"id\":{i}}}\n")).collect::<String>()).unwrap();
    let flow = format!(
        "schema E {{ id: int }}\nsource f = file {{ path = \"{}\", batch_size = 100 }} as E\nsink out = stdout\nf | out\n",
        input.display()
    );
    let log = Arc::new(Mutex::new(Log::default()));
    let mut config = RunConfig::new(1);
    config.sinks.insert("out".into(), Box::new(Background { log: log.clone(), pending: Vec::new(), fail: 2 }));
    let run = start(&flow, config);
    let metrics = run.metrics.clone();
    run.join().await.unwrap();

    let l = log.lock().unwrap();
    assert!(l.most_in_flight >= 2, "flushes overlap: at most {} in flight", l.most_in_flight);
    assert!(l.most_in_flight <= 4, "at most 4 flushes in flight, saw {}", l.most_in_flight);
    // Every event confirmed exactly once; the failed flush's events were written again.
    let mut times: BTreeMap<i64, usize> = BTreeMap::new();
    for &k in &l.confirmed {
        for &id in &l.flushes[k] {
            *times.entry(id).or_default() += 1;
        }
    }
    assert_eq!(times.len(), n, "every event confirmed");
    assert!(times.values().all(|&t| t == 1), "no event confirmed twice");
    assert!(!l.confirmed.contains(&2), "flush 2 failed");
    let failed = &l.flushes[2];
    assert!(!failed.is_empty());
    let rewritten = l.flushes[3..].iter().filter(|f| f.iter().any(|id| failed.contains(id))).count();
    assert!(rewritten >= 1, "the events of the failed flush were written again");
    let node = metrics.nodes.iter().find(|x| x.title.starts_with("sink out")).expect("the sink's counters");
    assert_eq!(node.events_out.get(), n as u64, "events counted once, when their flush succeeded");
    assert!(node.retries.get() >= 1);
}
