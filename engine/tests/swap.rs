//! Make-before-break replacement under load, through the binary and real clients: 20
//! replacements of a flow (PUT of `phoenix serve`, SIGHUP of `phoenix run`) while a Python
//! `requests` session posts to its `http` source without pause and a producer keeps writing to
//! the Kafka topic it consumes (tansu on 127.0.0.1). Every version writes to the same file.
//!
//! Held: no HTTP request refused or failed; every acknowledged HTTP event written exactly once;
//! every produced Kafka event written, duplicates only as the replay of a replaced version's
//! unacknowledged batches by a later version (counted); every line of the shared file whole.
//!
//! `cargo test -p phoenix-engine --test swap`

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::servers::{Tansu, python_client};
use support::{Guard, curl_with, free_port, phoenix_run, phoenix_serve, signal, temp, until, wait};

const LIMIT: Duration = Duration::from_secs(120);
const SWAPS: usize = 20;
const WRITE_KEY: &str = "wr1te-0123456789";
/// Kafka events' ids start here; HTTP events' ids below it.
const KAFKA_IDS: i64 = 1_000_000_000;

/// A Python `requests` session (keep-alive: one connection as long as the server keeps it)
/// posting `{"id": n}` for n = 0, 1, … until `STOP` exists; prints the acknowledged ids and
/// every failure (an exception such as a refused or reset connection, or a status other than
/// 200).
const POSTER: &str = r#"
import json, os, sys, requests
port, stop = sys.argv[1], sys.argv[2]
s = requests.Session()
acked, failed, n = [], [], 0
while not os.path.exists(stop):
    try:
        r = s.post(f"http://127.0.0.1:{port}/events", data=json.dumps({"id": n}), timeout=60)
        if r.status_code == 200:
            acked.append(n)
        else:
            failed.append(f"{n}: {r.status_code} {r.text}")
    except Exception as e:
        failed.append(f"{n}: {type(e).__name__}: {e}")
    n += 1
print(json.dumps({"acked": acked, "failed": failed}))
"#;

/// The flow, version `v`: the `http` source on `port` and the Kafka topic `in` into one file,
/// each event marked with its version and source.
fn flow(dir: &Path, port: u16, v: usize) -> String {
    format!(
        "schema E {{ id: int }}\n\
         source api = http {{ address = \"127.0.0.1:{port}\", path = \"/events\" }} as E\n\
         source k = kafka {{ brokers = env(\"KAFKA_BROKERS\"), topic = \"in\", group = \"swap\", commit_interval = 200ms }} as E\n\
         sink out = file {{ path = \"{}\" }}\n\
         api | select *, 'v{v}' as version | out\n\
         k | select *, 'v{v}' as version | out\n",
        dir.join("out.jsonl").display()
    )
}

/// The load: the HTTP poster and a Kafka producer, until [`Load::finish`].
struct Load {
    stop: Arc<AtomicBool>,
    stop_file: PathBuf,
    poster: Child,
    producer: std::thread::JoinHandle<Vec<i64>>,
}

impl Load {
    fn start(dir: &Path, port: u16, brokers: String) -> Load {
        let stop_file = dir.join("stop-posting");
        let poster = Command::new("python3")
            .args(["-c", POSTER, &port.to_string()])
            .arg(&stop_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let stop = Arc::new(AtomicBool::new(false));
        let producer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut produced = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let start = produced.len() as i64;
                    let ids: Vec<i64> = (start..start + 25).map(|i| KAFKA_IDS + i).collect();
                    let body: String = ids.iter().map(|id| format!("{{\"id\":{id}}}\n")).collect();
                    // Delivered (acknowledged by the broker) when the client returns.
                    python_client(
                        &["kafka-produce", &brokers, "in", "2", &start.to_string()],
                        Some(body.as_bytes()),
                        &[],
                    );
                    produced.extend(ids);
                    std::thread::sleep(Duration::from_millis(100));
                }
                produced
            })
        };
        Load { stop, stop_file, poster, producer }
    }

    /// Stop both; the HTTP ids acknowledged, the failed requests, the Kafka ids produced.
    fn finish(self) -> (Vec<i64>, Vec<String>, Vec<i64>) {
        self.stop.store(true, Ordering::Relaxed);
        std::fs::write(&self.stop_file, "").expect("stop file");
        let out = self.poster.wait_with_output().expect("poster");
        assert!(out.status.success(), "the poster failed");
        let v: Value = serde_json::from_slice(&out.stdout).expect("the poster's report");
        let acked = v["acked"].as_array().expect("acked").iter().map(|i| i.as_i64().expect("id")).collect();
        let failed = v["failed"].as_array().expect("failed").iter().map(|f| f.to_string()).collect();
        let produced = self.producer.join().expect("producer");
        (acked, failed, produced)
    }
}

/// Every line of the shared file, each a whole JSON object: `id → versions that wrote it`.
fn written(path: &Path) -> BTreeMap<i64, Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut by_id: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("a broken line ({e}): {line:?}"));
        by_id.entry(v["id"].as_i64().expect("id")).or_default().push(v["version"].as_str().expect("version").into());
    }
    by_id
}

/// The checks both tests make once the load has stopped and the output is complete.
fn check(out: &Path, acked: &[i64], failed: &[String], produced: &[i64], what: &str) {
    assert!(failed.is_empty(), "{} HTTP requests failed during {SWAPS} {what}: {failed:?}", failed.len());
    let by_id = written(out);
    let http_twice: Vec<(&i64, &Vec<String>)> =
        by_id.iter().filter(|(id, v)| **id < KAFKA_IDS && v.len() > 1).collect();
    assert!(http_twice.is_empty(), "HTTP events written twice: {http_twice:?}");
    let lost: Vec<&i64> = acked.iter().filter(|id| !by_id.contains_key(id)).collect();
    assert!(lost.is_empty(), "acknowledged HTTP events not written: {lost:?}");
    let missing: Vec<&i64> = produced.iter().filter(|id| !by_id.contains_key(id)).collect();
    assert!(missing.is_empty(), "produced Kafka events not written: {} of {}", missing.len(), produced.len());
    // A duplicate is a batch a replaced version took and had not acknowledged, read again from
    // the committed offset by a later version: never twice by one version.
    let mut duplicates = 0;
    for (id, versions) in by_id.iter().filter(|(id, _)| **id >= KAFKA_IDS) {
        let distinct: BTreeSet<&String> = versions.iter().collect();
        assert_eq!(distinct.len(), versions.len(), "event {id} written twice by one version: {versions:?}");
        duplicates += versions.len() - 1;
    }
    let versions: BTreeSet<&str> = by_id.values().flatten().map(String::as_str).collect();
    eprintln!(
        "{what}: {} HTTP events acknowledged, 0 requests failed; {} Kafka events produced, {duplicates} \
         written twice (replay window); {} versions wrote",
        acked.len(),
        produced.len(),
        versions.len()
    );
    assert!(acked.len() > 100, "the client kept posting: {}", acked.len());
    assert!(produced.len() > 100, "the producer kept producing: {}", produced.len());
    assert!(versions.contains(format!("v{SWAPS}").as_str()), "the last version wrote: {versions:?}");
}

/// The last version serves: an HTTP event is written by it.
fn last_serves(dir: &Path, port: u16) {
    let marker = KAFKA_IDS - 1;
    let (status, answer) = support::curl(
        &format!("127.0.0.1:{port}"),
        "POST",
        "/events",
        None,
        Some(format!("{{\"id\":{marker}}}").as_bytes()),
    );
    assert_eq!(status, 200, "{answer}");
    let by_id = written(&dir.join("out.jsonl"));
    assert_eq!(by_id.get(&marker), Some(&vec![format!("v{SWAPS}")]), "the marker written by the last version");
}

/// Wait until every produced Kafka event is in the file (the last version drains the topic).
fn all_consumed(dir: &Path, produced: &[i64]) {
    until(dir, "every produced event written", LIMIT, || {
        let by_id = written(&dir.join("out.jsonl"));
        produced.iter().all(|id| by_id.contains_key(id))
    });
}

fn setup(name: &str) -> (Tansu, PathBuf, u16) {
    let dir = temp(name);
    std::fs::create_dir_all(dir.join("flows")).expect("dir");
    let t = Tansu::start();
    t.create_topic("in", 2);
    (t, dir, free_port())
}

#[test]
fn twenty_puts_under_load_refuse_nothing_and_lose_nothing() {
    let (t, dir, port) = setup("swap-put");
    std::fs::write(dir.join("keys"), format!("{WRITE_KEY} write\n")).expect("keys");
    std::fs::write(dir.join("flows/ingest.phx"), flow(&dir, port, 0)).expect("flow");
    let addr = format!("127.0.0.1:{}", free_port());
    let child = phoenix_serve(&dir, &addr)
        .env("KAFKA_BROKERS", t.brokers())
        .env("RUST_LOG", "info")
        .spawn()
        .expect("phoenix serve");
    let child = Guard::new(child);
    until(&dir, "the http source", LIMIT, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    let load = Load::start(&dir, port, t.brokers());
    std::thread::sleep(Duration::from_millis(500));
    let headers = [format!("Authorization: Bearer {WRITE_KEY}")];
    for v in 1..=SWAPS {
        let (status, answer) =
            curl_with(&addr, "PUT", "/api/v1/flows/ingest", &headers, Some(flow(&dir, port, v).as_bytes()));
        assert_eq!(status, 200, "PUT {v}: {answer}");
        let a: Value = serde_json::from_str(&answer).expect("json");
        assert_eq!(a["status"]["state"], "running", "PUT {v}: {answer}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (acked, failed, produced) = load.finish();
    all_consumed(&dir, &produced);
    last_serves(&dir, port);
    signal(child.child(), "-TERM");
    let out = wait(child.take(), LIMIT);
    assert!(out.status.success(), "exit {:?}", out.status);
    check(&dir.join("out.jsonl"), &acked, &failed, &produced, "PUTs");

    // Make before break, each time: the new version started, then the old one drained.
    let log = std::fs::read_to_string(dir.join("phoenix.log")).expect("log");
    let events: Vec<&str> = log
        .lines()
        .filter_map(|l| ["draining the flow", "flow stopped", "flow started"].into_iter().find(|e| l.contains(e)))
        .collect();
    let expected: Vec<&str> = std::iter::once("flow started")
        .chain((0..SWAPS).flat_map(|_| ["flow started", "draining the flow", "flow stopped"]))
        .chain(["draining the flow", "flow stopped"])
        .collect();
    assert_eq!(events, expected);
}

#[test]
fn twenty_sighups_under_load_refuse_nothing_and_lose_nothing() {
    let (t, dir, port) = setup("swap-hup");
    let path = dir.join("flow.phx");
    std::fs::write(&path, flow(&dir, port, 0)).expect("flow");
    let child = phoenix_run(&path, &dir.join("phoenix.log")).env("KAFKA_BROKERS", t.brokers()).spawn().expect("run");
    let child = Guard::new(child);
    until(&dir, "the http source", LIMIT, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    let load = Load::start(&dir, port, t.brokers());
    std::thread::sleep(Duration::from_millis(500));
    let reloaded = |n: usize| {
        let log = std::fs::read_to_string(dir.join("phoenix.log")).unwrap_or_default();
        log.matches("reload: the new flow is running").count() >= n
    };
    for v in 1..=SWAPS {
        std::fs::write(&path, flow(&dir, port, v)).expect("edit");
        signal(child.child(), "-HUP");
        until(&dir, "the reload", LIMIT, || reloaded(v));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (acked, failed, produced) = load.finish();
    all_consumed(&dir, &produced);
    last_serves(&dir, port);
    signal(child.child(), "-TERM");
    let out = wait(child.take(), LIMIT);
    assert!(out.status.success(), "exit {:?}", out.status);
    check(&dir.join("out.jsonl"), &acked, &failed, &produced, "SIGHUPs");
    let log = std::fs::read_to_string(dir.join("phoenix.log")).expect("log");
    assert!(!log.contains("reload refused"), "{log}");
}
