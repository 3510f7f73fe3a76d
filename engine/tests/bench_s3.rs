//! `phoenix bench --source s3` end to end through the `phoenix` binary on a few thousand events
//! against `moto_server` on 127.0.0.1: both the plain download and Phoenix account for every
//! event, and boto3 (the independent client) finds the uploaded objects holding exactly those
//! events and the output file holding exactly the kept ones. No assertion is about timing;
//! boto3's download of the same objects is printed beside the report. Credentials are fake and
//! set for the child processes only.

mod support;

use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use support::servers::{AWS_ENV, Moto, python_client};
use support::{phoenix, temp, wait};

const EVENTS: u64 = 3_000;
const OBJECTS: u64 = 7;

#[test]
fn s3_bench_accounts_for_every_event() {
    let moto = Moto::start();
    let endpoint = moto.endpoint();
    let dir = temp("bench-s3");
    let child = phoenix()
        .args(["bench", "--source", "s3", "--endpoint", &endpoint, "--workers", "1"])
        .args(["--events", &EVENTS.to_string(), "--objects", &OBJECTS.to_string()])
        .arg("--dir")
        .arg(&dir)
        .envs(AWS_ENV.iter().copied())
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start phoenix bench");
    let out = wait(child, Duration::from_secs(300));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "phoenix bench failed:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{report}");

    // Both runs read every event.
    let row = |name: &str| -> Vec<String> {
        let line = report.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name:?} in\n{report}"));
        line[name.len()..].split_whitespace().map(String::from).collect()
    };
    assert_eq!(row("events read:"), ["3000", "3000"], "{report}");
    for line in ["plain download", "phoenix/plain:", "peak RSS:", "bytes/event", "MB/s"] {
        assert!(report.contains(line), "{line:?} missing from\n{report}");
    }
    let bucket = report
        .split("(bucket ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no bucket in\n{report}"))
        .to_string();

    // boto3 finds the objects the bench uploaded, holding every event once.
    let py = |args: &[&str]| python_client(args, None, AWS_ENV);
    let download: Value = serde_json::from_str(py(&["s3-download", &endpoint, &bucket, "events/"]).trim()).unwrap();
    assert_eq!(download["objects"], OBJECTS, "{download}");
    assert_eq!(download["lines"], EVENTS, "{download}");
    let mbs = download["bytes"].as_f64().unwrap() / 1e6 / download["seconds"].as_f64().unwrap();
    eprintln!(
        "boto3 download: {} objects, {} events in {:.3} s: {:.0} events/s, {mbs:.1} MB/s",
        download["objects"],
        download["lines"],
        download["seconds"].as_f64().unwrap(),
        EVENTS as f64 / download["seconds"].as_f64().unwrap()
    );
    let keys: Vec<String> = py(&["s3-list", &endpoint, &bucket, "events/"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len() as u64, OBJECTS);
    let input: Vec<Value> = keys
        .iter()
        .flat_map(|k| {
            py(&["s3-get", &endpoint, &bucket, k]).lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(input.len() as u64, EVENTS);

    // The output file holds each kept event once, and the report says how many.
    let expected = counts(input.iter().filter(|v| v["status"] != "charlie-0" && v["amount"].as_f64().unwrap() >= 1.0));
    let output: Vec<Value> = support::json_lines(&dir.join("s3-out.jsonl"));
    let kept = expected.values().sum::<u64>();
    assert!(kept > EVENTS * 99 / 100 && kept <= EVENTS, "the where keeps most events: {kept}");
    assert!(report.contains(&format!("the where keeps {kept}, written {kept}")), "{report}");
    assert_eq!(output.len() as u64, kept);
    let got = counts(output.iter());
    assert_eq!(got, expected, "Phoenix writes every kept event once");
    std::fs::remove_dir_all(&dir).ok();
}

/// How often each event occurs, by its fields (the sink may write numbers differently).
fn counts<'a>(events: impl Iterator<Item = &'a Value>) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for v in events {
        let key = format!("{}|{}|{}|{}", v["id"], v["user"], v["session"], v["ts"]);
        *m.entry(key).or_default() += 1;
    }
    m
}
