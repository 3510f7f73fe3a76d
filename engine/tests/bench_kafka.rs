//! `phoenix bench --sink kafka` end to end on a few thousand events against a real broker
//! (`tansu` on 127.0.0.1): every event is accounted for in both loops, and the output topics,
//! read back by an independent client, hold exactly what the report says was delivered. No
//! assertion is about timing.

mod support;

use phoenix_engine::bench::kafka::{Config, PARTITIONS, run_bench};
use std::collections::HashMap;
use std::time::Duration;
use support::kafka::read_topic;
use support::servers::Tansu;

const EVENTS: u64 = 4_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bench_accounts_for_every_event() {
    let t = Tansu::start();
    let config = Config { brokers: t.brokers(), events: EVENTS, workers: 1 };
    let report = run_bench(&config).await.expect("the bench runs");

    assert_eq!(report.plain.consumed, EVENTS, "{report}");
    assert_eq!(report.plain.delivered, EVENTS, "{report}");
    assert_eq!(report.phoenix.consumed, EVENTS, "{report}");
    assert_eq!(report.phoenix.delivered, report.kept, "{report}");
    // The where drops a few events and keeps most.
    assert!(report.kept <= EVENTS && report.kept > EVENTS * 99 / 100, "{report}");
    let avg = report.input_bytes / report.events;
    assert!((120..=200).contains(&avg), "events are meant to be ~150 bytes, got {avg}");
    let text = report.to_string();
    for line in ["plain loop", "phoenix/plain:", "peak RSS:", "bytes/event"] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }

    // Read every topic back: each output holds each event it should exactly once.
    let brokers = t.brokers();
    let (input, plain, phoenix) = tokio::task::spawn_blocking(move || {
        let read = |topic: &str, want: u64| {
            read_topic(&brokers, topic, PARTITIONS, want as usize, Duration::from_secs(60))
                .into_iter()
                .map(|m| m.payload)
                .collect::<Vec<String>>()
        };
        let topics = &report.topics;
        (read(&topics.input, EVENTS), read(&topics.plain, EVENTS), read(&topics.phoenix, report.kept))
    })
    .await
    .unwrap();
    assert_eq!(input.len() as u64, EVENTS);
    assert_eq!(counts(&plain), counts(&input), "the plain loop copies every event once");
    let mut expected = counts(&input);
    expected.retain(|p, _| {
        let v: serde_json::Value = serde_json::from_str(p).unwrap();
        v["status"] != "charlie-0" && v["amount"].as_f64().unwrap() >= 1.0
    });
    assert_eq!(phoenix.len() as u64, expected.values().sum::<u64>());
    assert_eq!(counts(&phoenix), expected, "Phoenix writes every kept event once, byte for byte");
}

/// How often each payload occurs.
fn counts(msgs: &[String]) -> HashMap<&str, u64> {
    let mut m: HashMap<&str, u64> = HashMap::new();
    for p in msgs {
        *m.entry(p.as_str()).or_default() += 1;
    }
    m
}
