//! The engine's side of a sink that flushes in the background (`Sink::begin_flush`, as the
//! `kafka` sink does): several flushes in flight while the next groups are written, events
//! held (not acknowledged) until their flush is settled, and a flush that fails as a whole
//! written again, never lost and never counted twice.

mod support;

use phoenix_engine::connectors::{BoxFuture, Flushing, ItemFailure, PartialFailure, Sink, WriteError};
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

/// Holds what is written until a flush begins. Flush number `fail` fails as a whole.
struct Background {
    log: Arc<Mutex<Log>>,
    pending: Vec<i64>,
    fail: usize,
    pace: Pace,
}

#[derive(Clone, Copy)]
enum Pace {
    /// Flush `k` resolves once flush `k + 1` has begun (or after a moment, for the last), so
    /// flushes overlap whenever the engine lets them.
    Overlapping,
    /// Every flush takes this long, so the engine's limit of flushes in flight is reached; a
    /// flush holding more than `group` events also fails its first event (were retried events
    /// mixed into another group's flush, that failure would be blamed on the wrong event).
    Slow { each: Duration, group: usize },
}

fn background(log: &Arc<Mutex<Log>>, fail: usize, pace: Pace) -> Box<Background> {
    Box::new(Background { log: log.clone(), pending: Vec::new(), fail, pace })
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
        let (log, fail, pace) = (self.log.clone(), self.fail, self.pace);
        let (k, events) = {
            let mut l = log.lock().unwrap();
            l.flushes.push(std::mem::take(&mut self.pending));
            l.in_flight += 1;
            l.most_in_flight = l.most_in_flight.max(l.in_flight);
            (l.flushes.len() - 1, l.flushes.last().map_or(0, Vec::len))
        };
        Some(Box::pin(async move {
            match pace {
                Pace::Overlapping => {
                    for _ in 0..50 {
                        if log.lock().unwrap().flushes.len() > k + 1 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                Pace::Slow { each, .. } => tokio::time::sleep(each).await,
            }
            let mut l = log.lock().unwrap();
            l.in_flight -= 1;
            if k == fail {
                return Err(WriteError::Retryable("the service went away".into()));
            }
            if let Pace::Slow { group, .. } = pace
                && events > group
            {
                let first = ItemFailure { index: 0, retryable: true, error: "throttled".into() };
                return Err(WriteError::Partial(PartialFailure { items: vec![first] }));
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

/// Run `n` events (ids 0..n, batches of 100) into `sink`; the log and the sink's delivered count.
async fn run_into(name: &str, n: usize, sink: Box<Background>) -> u64 {
    let dir = temp(name);
    let input = dir.join("in.jsonl");
    std::fs::write(&input, (0..n).map(|i| format!("{{\"id\":{i}}}\n")).collect::<String>()).unwrap();
    let flow = format!(
        "schema E {{ id: int }}\nsource f = file {{ path = \"{}\", batch_size = 100 }} as E\nsink out = stdout {{ backoff_min = 10ms }}\nf | out\n",
        input.display()
    );
    let mut config = RunConfig::new(1);
    config.sinks.insert("out".into(), sink);
    let run = start(&flow, config);
    let metrics = run.metrics.clone();
    run.join().await.unwrap();
    let node = metrics.nodes.iter().find(|x| x.title.starts_with("sink out")).expect("the sink's counters");
    assert!(node.retries.get() >= 1);
    node.events_out.get()
}

/// Every event confirmed exactly once (by a flush that succeeded).
fn assert_confirmed_once(l: &Log, n: usize) {
    let mut times: BTreeMap<i64, usize> = BTreeMap::new();
    for &k in &l.confirmed {
        for &id in &l.flushes[k] {
            *times.entry(id).or_default() += 1;
        }
    }
    let missing: Vec<i64> = (0..n as i64).filter(|id| !times.contains_key(id)).collect();
    assert!(missing.is_empty(), "events never confirmed: {missing:?}; flushes: {:?}", sizes(l));
    assert!(times.values().all(|&t| t == 1), "no event confirmed twice");
}

fn sizes(l: &Log) -> Vec<usize> {
    l.flushes.iter().map(Vec::len).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_flushes_overlap_and_a_failed_one_is_written_again() {
    let n = 2_000;
    let log = Arc::new(Mutex::new(Log::default()));
    let delivered = run_into("sink-runner-overlap", n, background(&log, 2, Pace::Overlapping)).await;
    let l = log.lock().unwrap();
    assert!(l.most_in_flight >= 2, "flushes overlap: at most {} in flight", l.most_in_flight);
    assert!(l.most_in_flight <= 4, "at most 4 flushes in flight, saw {}", l.most_in_flight);
    assert_confirmed_once(&l, n);
    assert!(!l.confirmed.contains(&2), "flush 2 failed");
    let failed = &l.flushes[2];
    assert!(!failed.is_empty());
    let rewritten = l.flushes[3..].iter().filter(|f| f.iter().any(|id| failed.contains(id))).count();
    assert!(rewritten >= 1, "the events of the failed flush were written again");
    assert_eq!(delivered, n as u64, "events counted once, when their flush succeeded");
}

/// With every flush slot taken, the oldest flush fails: its events are written again in a flush
/// of their own, not in the one the next group is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_failed_flush_get_a_flush_of_their_own_when_the_pipeline_is_full() {
    let n = 1_000;
    let log = Arc::new(Mutex::new(Log::default()));
    let pace = Pace::Slow { each: Duration::from_millis(500), group: 100 };
    let delivered = run_into("sink-runner-full", n, background(&log, 0, pace)).await;
    let l = log.lock().unwrap();
    // 4 in the background, and the retry's own flush beside them.
    assert!((4..=5).contains(&l.most_in_flight), "the pipeline filled: {} in flight", l.most_in_flight);
    assert_confirmed_once(&l, n);
    assert!(l.flushes.iter().all(|f| !f.is_empty() && f.len() <= 100), "one group per flush: {:?}", sizes(&l));
    assert_eq!(delivered, n as u64);
}
