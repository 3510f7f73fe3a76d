//! The `sqs` connectors against `moto_server` on 127.0.0.1, through the `phoenix` binary, with
//! boto3 (Python) as the independent client. Credentials are fake and set for the child
//! processes only; nothing leaves 127.0.0.1.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::servers::{AWS_ENV, Moto, python_client};
use support::{Guard, lines, phoenix_run, signal, temp, until, wait};

fn py(args: &[&str], stdin: Option<&[u8]>) -> String {
    python_client(args, stdin, AWS_ENV)
}

fn create(m: &Moto, name: &str, fifo: bool) -> String {
    let endpoint = m.endpoint();
    let mut args = vec!["sqs-create", endpoint.as_str(), name];
    if fifo {
        args.push("fifo");
    }
    py(&args, None).trim().to_string()
}

fn send(m: &Moto, url: &str, bodies: &[String]) {
    let data: String = bodies.iter().map(|b| format!("{b}\n")).collect();
    py(&["sqs-send", &m.endpoint(), url], Some(data.as_bytes()));
}

/// Receive (and delete) everything in a queue until it stays empty for a moment.
fn drain(m: &Moto, url: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let got: Vec<Value> = py(&["sqs-receive", &m.endpoint(), url, "1000000", "3"], None)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

/// (visible, in flight) messages of a queue.
fn count(m: &Moto, url: &str) -> (i64, i64) {
    let v: Value = serde_json::from_str(py(&["sqs-count", &m.endpoint(), url], None).trim()).unwrap();
    (v["visible"].as_i64().unwrap(), v["in_flight"].as_i64().unwrap())
}

fn events(n: i64, poison: &[i64]) -> Vec<String> {
    (0..n)
        .map(|i| {
            if poison.contains(&i) {
                format!("poison {i}")
            } else {
                let kind = if i % 10 == 9 { "skip" } else { ["a", "b"][i as usize % 2] };
                format!(r#"{{"id":{i},"ref":"r{i}","kind":"{kind}"}}"#)
            }
        })
        .collect()
}

fn expected(n: i64, poison: &[i64]) -> BTreeSet<i64> {
    (0..n).filter(|i| i % 10 != 9 && !poison.contains(i)).collect()
}

fn ids(msgs: &[Value]) -> Vec<i64> {
    msgs.iter()
        .map(|m| serde_json::from_str::<Value>(m["body"].as_str().unwrap()).unwrap()["id"].as_i64().unwrap())
        .collect()
}

/// Every receive the flow processed, per message id: the receive counts SQS gave them.
fn receives(dir: &Path) -> BTreeMap<i64, Vec<i64>> {
    let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for m in support::json_lines(&dir.join("meta.jsonl")) {
        out.entry(m["id"].as_i64().unwrap()).or_default().push(m["receives"].as_i64().unwrap());
    }
    out
}

/// Phoenix processes each receive once and writes each processed event once: a message seen k
/// times (in the metadata file, or in the output) was received at least k times, which its
/// latest receive count says.
fn check_receives(copies: &BTreeMap<i64, Vec<i64>>, out: &[i64]) {
    let mut written: BTreeMap<i64, i64> = BTreeMap::new();
    for id in out {
        *written.entry(*id).or_default() += 1;
    }
    for (id, r) in copies {
        let most = *r.iter().max().unwrap();
        assert!(most >= r.len() as i64, "message {id} processed {} times but received {most} times", r.len());
        let w = written.get(id).copied().unwrap_or(0);
        assert!(most >= w, "event {id} written {w} times but received {most} times");
    }
}

/// SQS in → where → SQS out (possibly on another server), poison to a file, metadata to another.
fn flow(dir: &Path, source: (&Moto, &str), sink: (&Moto, &str), visibility: &str) -> PathBuf {
    let p = dir.join("flow.phx");
    std::fs::write(
        &p,
        format!(
            r#"schema E {{ id: int, ref: string, kind: string }}

source input = sqs {{
  queue_url = "{in_url}",
  endpoint = "{in_endpoint}",
  region = "us-east-1",
  pollers = 3,
  wait_time = 1s,
  visibility_timeout = {visibility},
}} as E

sink output = sqs {{ queue_url = "{out_url}", endpoint = "{out_endpoint}", region = "us-east-1", backoff_max = 1s }}
sink meta = file {{ path = "{meta}" }}
sink dead = file {{ path = "{dead}" }}

input | where kind != 'skip' | output
input | select id, @message_id as message_id, @receive_count as receives | meta
input.errors | dead
"#,
            in_url = source.1,
            in_endpoint = source.0.endpoint(),
            out_url = sink.1,
            out_endpoint = sink.0.endpoint(),
            meta = dir.join("meta.jsonl").display(),
            dead = dir.join("dead.jsonl").display(),
        ),
    )
    .unwrap();
    p
}

fn run(flow: &Path) -> Guard {
    phoenix_run(flow, &flow.with_file_name("phoenix.log"))
        .envs(AWS_ENV.iter().copied())
        .spawn()
        .map(Guard::new)
        .unwrap()
}

fn stop(child: Guard) {
    signal(child.child(), "-TERM");
    let out = wait(child.take(), Duration::from_secs(90));
    assert!(out.status.success(), "phoenix exited with {:?}", out.status);
}

#[test]
fn every_message_is_delivered_and_deleted() {
    let moto = Moto::start();
    let dir = temp("sqs-normal");
    let (input, output) = (create(&moto, "in", false), create(&moto, "out", false));
    let poison = [7, 233];
    send(&moto, &input, &events(300, &poison));
    let child = run(&flow(&dir, (&moto, &input), (&moto, &output), "30s"));
    until(&dir, "every message handled and deleted", Duration::from_secs(120), || {
        lines(&dir.join("meta.jsonl")).len() >= 298 && count(&moto, &input) == (0, 0)
    });
    stop(child);
    let got = ids(&drain(&moto, &output));
    let unique: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(unique, expected(300, &poison), "every event delivered");
    // Why messages are received twice here despite a 30 s visibility timeout and no error
    // logged (19–26 in an earlier run); found by running this flow and plain boto3 against
    // moto 5 (300 messages). None is the source handing one receive to the flow twice, nor a
    // late visibility extension (batches are settled in well under 10 s):
    // 1. moto loses deletes. `Queue.delete_message` rebuilds `self._messages` without the
    //    deleted message and assigns it back, unlocked, while moto_server runs each request on
    //    its own thread; two DeleteMessageBatch calls at once can each write back a list that
    //    still holds the other's messages. Every entry answers success, and the lost batch
    //    comes back whole after the visibility timeout with receive count 2. Seen here as a
    //    receive batch of exactly 10 messages written again 30 s later (receives 1, then 2);
    //    boto3 alone, deleting 300 received messages from 6 threads, left 20 and 30 of them in
    //    the queue in two runs (1 thread: none). Phoenix deletes each batch once it is
    //    delivered, so batches are deleted concurrently.
    // 2. moto's ReceiveMessage is not atomic either: it tests `message.visible`, then marks
    //    the message received, so two pollers can take one message at the same instant
    //    (getmoto/moto#519): two copies side by side, receive counts 1 and 2 (or 2 and 2).
    //    1–2 a run; none with a lock around moto's `receive_message`.
    // 3. A receive the client gave up on (moto answering later than `wait_time` + 10 s on a
    //    busy machine) hands its messages to a closed connection; they come back after the
    //    visibility timeout with receive count 2, one copy each: freezing moto for 14 s
    //    mid-run gave 30 (3 pollers × 10) and no duplicate. The SDK used to retry such an
    //    attempt silently; the source now retries it itself and logs a warning, checked below.
    // In every case a message written k times was received k times, which is what is checked.
    let copies = receives(&dir);
    check_receives(&copies, &got);
    let unseen = copies.values().filter(|r| r.len() == 1 && r[0] > 1).count();
    let log = std::fs::read_to_string(dir.join("phoenix.log")).unwrap_or_default();
    assert!(
        unseen == 0 || log.contains("ReceiveMessage failed"),
        "{unseen} messages were received by a request Phoenix never got an answer to, and no failed receive was logged"
    );
    let dead: BTreeSet<String> = support::json_lines(&dir.join("dead.jsonl"))
        .iter()
        .map(|d| d["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dead, ["poison 233".to_string(), "poison 7".to_string()].into(), "poison messages to `.errors`");
    for m in support::json_lines(&dir.join("meta.jsonl")) {
        assert!(m["message_id"].as_str().is_some_and(|s| !s.is_empty()), "{m}");
        assert!(m["receives"].as_i64().is_some_and(|r| r >= 1), "{m}");
    }
}

#[test]
fn sigkill_mid_stream_then_restart_loses_nothing() {
    let moto = Moto::start();
    let dir = temp("sqs-sigkill");
    let (input, output) = (create(&moto, "in", false), create(&moto, "out", false));
    let n = 600;
    send(&moto, &input, &events(n, &[]));
    // A short visibility timeout, so what the killed process held comes back soon.
    let flow = flow(&dir, (&moto, &input), (&moto, &output), "3s");
    let child = run(&flow);
    until(&dir, "the flow under way", Duration::from_secs(120), || lines(&dir.join("meta.jsonl")).len() >= 150);
    signal(child.child(), "-KILL");
    let _ = wait(child.take(), Duration::from_secs(30));
    let child = run(&flow);
    until(&dir, "every message deleted", Duration::from_secs(180), || count(&moto, &input) == (0, 0));
    stop(child);
    let got = ids(&drain(&moto, &output));
    let mut counts = BTreeMap::new();
    for id in &got {
        *counts.entry(*id).or_insert(0) += 1;
    }
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), expected(n, &[]), "no message lost");
    // Duplicates: messages the killed process received and may have written but not deleted,
    // each received again by the second process.
    let duplicates = got.len() - counts.len();
    let copies = receives(&dir);
    check_receives(&copies, &got);
    let redelivered = copies.values().filter(|r| r.iter().any(|n| *n > 1)).count();
    eprintln!("sqs sigkill: {} messages out, {duplicates} duplicates, {redelivered} received again", got.len());
}

#[test]
fn outages_of_either_server_are_waited_out() {
    let (source, sink) = (Moto::start(), Moto::start());
    let dir = temp("sqs-outage");
    let (input, output) = (create(&source, "in", false), create(&sink, "out", false));
    let all = events(300, &[]);
    send(&source, &input, &all[..150]);
    // Visibility 6s, and the sink's server frozen for 15s: batches wait far longer than their
    // visibility timeout, so only the source extending it keeps them from being delivered twice.
    let child = run(&flow(&dir, (&source, &input), (&sink, &output), "6s"));
    sink.pause();
    std::thread::sleep(Duration::from_secs(15));
    sink.resume();
    until(&dir, "the first 150 deleted", Duration::from_secs(120), || count(&source, &input) == (0, 0));
    // Now the queue's server freezes: receives time out and are retried.
    source.pause();
    std::thread::sleep(Duration::from_secs(5));
    source.resume();
    send(&source, &input, &all[150..]);
    until(&dir, "everything deleted", Duration::from_secs(120), || {
        lines(&dir.join("meta.jsonl")).len() >= 300 && count(&source, &input) == (0, 0)
    });
    stop(child);
    let got = ids(&drain(&sink, &output));
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), expected(300, &[]), "nothing lost");
    let receives: Vec<i64> =
        support::json_lines(&dir.join("meta.jsonl")).iter().map(|m| m["receives"].as_i64().unwrap()).collect();
    // At least once: duplicates come only from messages SQS handed out again.
    let again = receives.iter().filter(|r| **r > 1).count();
    let duplicates = got.len() - expected(300, &[]).len();
    assert!(duplicates <= again, "{duplicates} duplicates, {again} messages received twice");
    eprintln!("sqs outage: {} messages out for 300 events, {again} received twice", got.len());
}

#[test]
fn fifo_sink_sets_group_and_deduplication_ids() {
    let moto = Moto::start();
    let dir = temp("sqs-fifo");
    let out = create(&moto, "out.fifo", true);
    let input = dir.join("in.jsonl");
    // Event 3 twice: the deduplication id drops the second.
    let text: String = [0, 1, 2, 3, 3, 4]
        .iter()
        .map(|i| format!("{{\"id\":{i},\"ref\":\"r{i}\",\"kind\":\"{}\"}}\n", ["a", "b"][i % 2]))
        .collect();
    std::fs::write(&input, text).unwrap();
    let flow = dir.join("flow.phx");
    std::fs::write(
        &flow,
        format!(
            r#"schema E {{ id: int, ref: string, kind: string }}
source f = file {{ path = "{}" }} as E
sink q = sqs {{ queue_url = "{out}", endpoint = "{}", message_group_id = kind, deduplication_id = ref, concurrency = 1 }}
f | q
"#,
            input.display(),
            moto.endpoint()
        ),
    )
    .unwrap();
    let out_run = run(&flow);
    let status = wait(out_run.take(), Duration::from_secs(60));
    assert!(status.status.success(), "{}", std::fs::read_to_string(dir.join("phoenix.log")).unwrap_or_default());
    let msgs = drain(&moto, &out);
    assert_eq!(ids(&msgs).into_iter().collect::<BTreeSet<_>>(), [0, 1, 2, 3, 4].into());
    assert_eq!(msgs.len(), 5, "the repeated event was deduplicated");
    for m in &msgs {
        let body: Value = serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
        assert_eq!(m["attributes"]["MessageGroupId"], body["kind"], "{m}");
        assert_eq!(m["attributes"]["MessageDeduplicationId"], body["ref"], "{m}");
    }
}

#[test]
fn refused_events_are_dead_lettered_alone() {
    let moto = Moto::start();
    let dir = temp("sqs-refused");
    let out = create(&moto, "out.fifo", true);
    let input = dir.join("in.jsonl");
    // In one batch: an event too large for `max_message_size` and one whose FIFO group id is
    // NULL are refused with their reasons; their neighbours reach the queue.
    let big = "x".repeat(300);
    let text = format!(
        "{{\"id\":0,\"ref\":\"r0\",\"kind\":\"a\"}}\n{{\"id\":1,\"ref\":\"r1\",\"kind\":\"a\",\"pad\":\"{big}\"}}\n\
         {{\"id\":2,\"ref\":\"r2\",\"kind\":null}}\n{{\"id\":3,\"ref\":\"r3\",\"kind\":\"b\"}}\n"
    );
    std::fs::write(&input, text).unwrap();
    let flow = dir.join("flow.phx");
    std::fs::write(
        &flow,
        format!(
            r#"schema E {{ id: int, ref: string, kind: string? }}
source f = file {{ path = "{}" }} as E
sink q = sqs {{ queue_url = "{out}", endpoint = "{}", message_group_id = kind, deduplication_id = ref, max_message_size = 200B }}
sink dead = file {{ path = "{}" }}
f | q
q.errors | dead
"#,
            input.display(),
            moto.endpoint(),
            dir.join("dead.jsonl").display(),
        ),
    )
    .unwrap();
    let status = wait(run(&flow).take(), Duration::from_secs(60));
    assert!(status.status.success(), "{}", std::fs::read_to_string(dir.join("phoenix.log")).unwrap_or_default());
    assert_eq!(ids(&drain(&moto, &out)).into_iter().collect::<BTreeSet<_>>(), [0, 3].into());
    let dead = support::json_lines(&dir.join("dead.jsonl"));
    let mut reasons: Vec<(i64, String)> = dead
        .iter()
        .map(|d| {
            let e: Value = serde_json::from_str(d["payload"].as_str().unwrap()).unwrap();
            (e["id"].as_i64().unwrap(), d["error"].as_str().unwrap().to_string())
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].0 == 1 && reasons[0].1.contains("max_message_size"), "{reasons:?}");
    assert!(reasons[1].0 == 2 && reasons[1].1.contains("message_group_id"), "{reasons:?}");
}
