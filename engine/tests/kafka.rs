//! The `kafka` connectors against a real broker: `tansu` on 127.0.0.1, the `phoenix` binary as
//! users run it, and confluent-kafka (Python) as the independent client that writes the input and
//! reads the output. Fault injection that needs a cooperative broker is in `kafka_mock.rs`.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use support::servers::{Tansu, python_client};
use support::{Guard, lines, phoenix_run, signal, temp, until, wait};

const PARTITIONS: i32 = 3;

/// The flow under test: Kafka → where → Kafka, poison events to a file. `session` is the
/// consumer's session timeout in ms; `slow` makes the flow take seconds over the input (small
/// batches, each sink flush waiting half a second for the producer's linger), so a test can stop
/// it mid-stream however fast the engine is.
fn flow(dir: &Path, session: u32, slow: bool) -> std::path::PathBuf {
    let (batch_size, sink_extra) = if slow { (100, "\n  properties = [\"linger.ms=500\"],") } else { (500, "") };
    let p = dir.join("flow.phx");
    std::fs::write(
        &p,
        format!(
            r#"schema E {{ id: int, kind: string }}

source input = kafka {{
  brokers = env("KAFKA_BROKERS"),
  topic = "in",
  group = "phoenix-it",
  batch_size = {batch_size},
  commit_interval = 200ms,
  properties = ["session.timeout.ms={session}"],
}} as E

sink output = kafka {{
  brokers = env("KAFKA_BROKERS"),
  topic = "out",
  key = kind,
  headers = '{{"via": "phoenix"}}',{sink_extra}
}}
sink dead = file {{ path = "{}" }}

input | where kind != 'skip' | output
input.errors | dead
"#,
            dir.join("dead.jsonl").display(),
        ),
    )
    .unwrap();
    p
}

/// Event `i` goes to partition `i % 3` at offset `i / 3` (the producer writes in order).
fn payloads(n: i64, poison: &[i64]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        if poison.contains(&i) {
            out.extend_from_slice(format!("poison {i}, not JSON\n").as_bytes());
        } else {
            let kind = if i % 10 == 9 { "skip" } else { ["a", "b"][i as usize % 2] };
            out.extend_from_slice(format!("{{\"id\":{i},\"kind\":\"{kind}\",\"pad\":\"{:0>60}\"}}\n", i).as_bytes());
        }
    }
    out
}

fn expected(n: i64, poison: &[i64]) -> BTreeSet<i64> {
    (0..n).filter(|i| i % 10 != 9 && !poison.contains(i)).collect()
}

fn produce(t: &Tansu, topic: &str, data: &[u8]) {
    python_client(&["kafka-produce", &t.brokers(), topic, &PARTITIONS.to_string()], Some(data), &[]);
}

/// Read `topic` from the beginning: up to `count` messages, stopping after `idle` seconds
/// without one.
fn read(t: &Tansu, topic: &str, count: usize, idle: &str) -> Vec<Value> {
    let out = python_client(
        &["kafka-read", &t.brokers(), topic, &PARTITIONS.to_string(), &count.to_string(), "120", idle],
        None,
        &[],
    );
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Whether `topic` holds at least `n` messages. (tansu's high watermarks do not count
/// messages, so this reads them.)
fn holds(t: &Tansu, topic: &str, n: usize) -> bool {
    read(t, topic, n, "1").len() >= n
}

/// Everything in `topic` (read until nothing arrives for 3 s).
fn read_all(t: &Tansu, topic: &str) -> Vec<Value> {
    read(t, topic, usize::MAX >> 1, "3")
}

fn committed(t: &Tansu) -> Vec<Option<i64>> {
    let (brokers, partitions) = (t.brokers(), PARTITIONS.to_string());
    let out = python_client(&["kafka-committed", &brokers, "phoenix-it", "in", &partitions], None, &[]);
    serde_json::from_str(out.trim()).unwrap()
}

/// Start `phoenix run`; its log goes to `phoenix.log` beside the flow (shown if a test fails).
fn run(flow: &Path, t: &Tansu) -> Guard {
    phoenix_run(flow, &flow.with_file_name("phoenix.log"))
        .env("KAFKA_BROKERS", t.brokers())
        .spawn()
        .map(Guard::new)
        .unwrap()
}

fn ids(msgs: &[Value]) -> Vec<i64> {
    msgs.iter()
        .map(|m| {
            let v: Value = serde_json::from_str(m["value"].as_str().unwrap()).unwrap();
            v["id"].as_i64().unwrap()
        })
        .collect()
}

fn setup(name: &str) -> (Tansu, std::path::PathBuf) {
    let t = Tansu::start();
    t.create_topic("in", PARTITIONS);
    t.create_topic("out", PARTITIONS);
    (t, temp(name))
}

#[test]
fn every_event_is_delivered_and_poison_goes_to_errors() {
    let (t, dir) = setup("kafka-normal");
    let poison = [17, 1234];
    produce(&t, "in", &payloads(3000, &poison));
    let want = expected(3000, &poison);
    let child = run(&flow(&dir, 10_000, false), &t);
    until(&dir, "every event written and committed", Duration::from_secs(120), || committed(&t) == vec![Some(1000); 3]);
    signal(child.child(), "-TERM");
    let out = wait(child.take(), Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let msgs = read_all(&t, "out");
    let got = ids(&msgs);
    assert_eq!(got.len(), want.len(), "exactly once in the normal path");
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), want);
    for m in &msgs {
        assert_eq!(m["headers"]["via"], "phoenix");
        assert!(matches!(m["key"].as_str(), Some("a" | "b")), "{m}");
        // Bytes pass through untouched.
        assert!(m["value"].as_str().unwrap().contains("\"pad\":\""), "{m}");
    }
    let dead = lines(&dir.join("dead.jsonl"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead.iter().any(|d| d.contains("poison 17")) && dead.iter().any(|d| d.contains("poison 1234")));
    // The partitions with poison were not stalled: events after them arrived (checked above),
    // and every offset, poison included, is committed.
    assert_eq!(committed(&t), vec![Some(1000); 3]);
}

#[test]
fn sigkill_mid_stream_then_restart_loses_nothing() {
    let (t, dir) = setup("kafka-sigkill");
    let n = 30_000;
    produce(&t, "in", &payloads(n, &[]));
    let want = expected(n, &[]);
    // A short session, so the broker gives up on the killed member soon.
    let flow = flow(&dir, 6_000, true);
    let child = run(&flow, &t);
    until(&dir, "the flow under way", Duration::from_secs(120), || holds(&t, "out", 3000));
    signal(child.child(), "-KILL");
    let _ = wait(child.take(), Duration::from_secs(30));
    let at_kill = committed(&t);
    // tansu 0.6 drops a dead member only when its session has expired at the time another
    // member joins (a real Kafka broker rebalances on expiry by itself): restart after that.
    std::thread::sleep(Duration::from_secs(7));
    let written_at_kill = read_all(&t, "out").len();
    assert!(written_at_kill < want.len(), "killed mid-stream ({written_at_kill} written)");

    let child = run(&flow, &t);
    until(&dir, "everything committed after the restart", Duration::from_secs(180), || {
        committed(&t) == vec![Some(n / 3); 3]
    });
    signal(child.child(), "-TERM");
    let out = wait(child.take(), Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let got = ids(&read_all(&t, "out"));
    let mut counts = BTreeMap::new();
    for id in &got {
        *counts.entry(*id).or_insert(0) += 1;
    }
    let missing: Vec<(i64, i64, i64)> =
        want.iter().filter(|i| !counts.contains_key(i)).map(|i| (*i, i % 3, i / 3)).collect();
    assert!(
        missing.is_empty(),
        "{} events lost (id, partition, offset), committed at kill {at_kill:?}: {:?}",
        missing.len(),
        &missing[..missing.len().min(50)]
    );
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), want, "no event lost");
    // Duplicates only from the window that was read but not committed when the process died.
    let duplicates: Vec<i64> = counts.iter().filter(|(_, c)| **c > 1).map(|(id, _)| *id).collect();
    for id in &duplicates {
        let (partition, offset) = ((id % 3) as usize, id / 3);
        let committed = at_kill[partition].unwrap_or(0);
        assert!(offset >= committed, "event {id} (offset {offset}) was duplicated though committed ({committed})");
        assert_eq!(counts[id], 2, "event {id} written {} times", counts[id]);
    }
    let window: i64 = (0..3).map(|p| n / 3 - at_kill[p].unwrap_or(0)).sum();
    eprintln!(
        "sigkill: {} written before the kill, committed at kill {at_kill:?}, {} duplicates after restart \
         (all from the {window} uncommitted offsets)",
        written_at_kill,
        duplicates.len()
    );
}

#[test]
fn a_frozen_broker_is_waited_out() {
    let (t, dir) = setup("kafka-frozen");
    let n = 6000;
    let data = payloads(n, &[]);
    let half = data.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(n as usize / 2 - 1).unwrap().0 + 1;
    produce(&t, "in", &data[..half]);
    let child = run(&flow(&dir, 10_000, false), &t);
    until(&dir, "the first half", Duration::from_secs(120), || holds(&t, "out", 2000));
    // The broker hangs for a while: requests time out and are retried. (Shorter than the
    // consumer's session: tansu 0.6 does not let a member whose session expired rejoin its
    // group; `kafka_mock.rs` has outages that outlast every timeout.)
    t.pause();
    std::thread::sleep(Duration::from_secs(7));
    t.resume();
    // Second half: written as one stream from the start so partitions and offsets line up.
    let second: Vec<u8> = data[half..].to_vec();
    python_client(&["kafka-produce", &t.brokers(), "in", "3", &(n / 2).to_string()], Some(&second), &[]);
    until(&dir, "everything committed", Duration::from_secs(180), || committed(&t) == vec![Some(n / 3); 3]);
    signal(child.child(), "-TERM");
    let out = wait(child.take(), Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: BTreeSet<i64> = ids(&read_all(&t, "out")).into_iter().collect();
    assert_eq!(got, expected(n, &[]), "caught up, nothing lost");
}

/// One replica of the flow with its own `/ready` port and log (`phoenix-NAME.log`).
fn replica(flow: &Path, t: &Tansu, name: &str) -> (Guard, u16) {
    let port = support::free_port();
    let log = std::fs::File::create(flow.with_file_name(format!("phoenix-{name}.log"))).unwrap();
    let child = support::phoenix()
        .args(["run", flow.to_str().unwrap(), "--no-progress", "-v"])
        .args(["--metrics-address", &format!("127.0.0.1:{port}")])
        .env("KAFKA_BROKERS", t.brokers())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (Guard::new(child), port)
}

fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = write!(s, "GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// A rolling update as Kubernetes runs one (`maxUnavailable: 0`): two replicas share the
/// partitions in one consumer group; a third starts and, once `/ready` (its consumer has an
/// assignment), an old one gets SIGTERM mid-stream while events are still being produced. It
/// drains and commits what it delivered; the group rebalances. Every event must arrive;
/// duplicates (events a replica had read but not committed when its partitions moved) are
/// counted and reported.
#[test]
fn a_rolling_update_loses_nothing() {
    let (t, dir) = setup("kafka-rolling");
    let n: i64 = 12_000;
    let data = payloads(n, &[]);
    let lines: Vec<&[u8]> = data.split_inclusive(|b| *b == b'\n').collect();
    let chunk = |from: i64, to: i64| -> Vec<u8> { lines[from as usize..to as usize].concat() };
    let produce_from = |from: i64, to: i64| {
        python_client(
            &["kafka-produce", &t.brokers(), "in", &PARTITIONS.to_string(), &from.to_string()],
            Some(&chunk(from, to)),
            &[],
        );
    };
    produce_from(0, 3000);
    let flow = flow(&dir, 10_000, true);
    let (a, a_port) = replica(&flow, &t, "a");
    let (b, b_port) = replica(&flow, &t, "b");
    until(&dir, "both replicas ready (each has partitions)", Duration::from_secs(60), || {
        ready(a_port) && ready(b_port)
    });
    until(&dir, "the flow under way", Duration::from_secs(120), || holds(&t, "out", 1000));

    std::thread::scope(|s| {
        // Events keep arriving during the whole update.
        let producer = s.spawn(|| {
            for from in (3000..n).step_by(500) {
                produce_from(from, (from + 500).min(n));
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        // The new pod first; the old one is stopped only once the new one is ready.
        let (c, c_port) = replica(&flow, &t, "c");
        until(&dir, "the new replica ready", Duration::from_secs(60), || ready(c_port));
        assert!(!producer.is_finished(), "events still arrive when the old replica is stopped");
        signal(a.child(), "-TERM");
        let out = wait(a.take(), Duration::from_secs(60));
        assert!(out.status.success(), "the old replica drains and exits 0");
        assert!(!producer.is_finished(), "events still arrived while it drained");
        producer.join().unwrap();
        until(&dir, "everything committed", Duration::from_secs(180), || committed(&t) == vec![Some(n / 3); 3]);
        for r in [b, c] {
            signal(r.child(), "-TERM");
            let out = wait(r.take(), Duration::from_secs(60));
            assert!(out.status.success());
        }
    });

    let got = ids(&read_all(&t, "out"));
    let mut counts = BTreeMap::new();
    for id in &got {
        *counts.entry(*id).or_insert(0) += 1;
    }
    let want = expected(n, &[]);
    let missing: Vec<&i64> = want.iter().filter(|i| !counts.contains_key(i)).collect();
    assert!(missing.is_empty(), "{} events lost: {:?}", missing.len(), &missing[..missing.len().min(50)]);
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), want);
    let duplicates = counts.values().filter(|c| **c > 1).count();
    eprintln!("rolling update: {} events delivered, {} of them more than once", want.len(), duplicates);
}
