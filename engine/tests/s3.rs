//! The `s3` connectors against `moto_server` on 127.0.0.1, through the `phoenix` binary, with
//! boto3 (Python) as the independent client. Credentials are fake and set for the child
//! processes only; nothing leaves 127.0.0.1.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::servers::{AWS_ENV, Moto, python_client};
use support::{Guard, json_lines, lines, phoenix_run, signal, temp, until, wait};

fn py(args: &[&str], stdin: Option<&[u8]>) -> String {
    python_client(args, stdin, AWS_ENV)
}

fn bucket(m: &Moto, name: &str, notify: Option<&str>) {
    let endpoint = m.endpoint();
    let mut args = vec!["s3-bucket", endpoint.as_str(), name];
    args.extend(notify);
    py(&args, None);
}

fn put(m: &Moto, bucket: &str, key: &str, data: &[u8], encoding: Option<&str>) {
    let endpoint = m.endpoint();
    let mut args = vec!["s3-put", endpoint.as_str(), bucket, key];
    args.extend(encoding);
    py(&args, Some(data));
}

/// key → (size, etag, content encoding)
fn list(m: &Moto, bucket: &str, prefix: &str) -> BTreeMap<String, (u64, String, Option<String>)> {
    py(&["s3-list", &m.endpoint(), bucket, prefix], None)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let k = v["key"].as_str().unwrap().to_string();
            (
                k,
                (
                    v["size"].as_u64().unwrap(),
                    v["etag"].as_str().unwrap().to_string(),
                    v["content_encoding"].as_str().map(String::from),
                ),
            )
        })
        .collect()
}

fn get(m: &Moto, bucket: &str, key: &str) -> String {
    py(&["s3-get", &m.endpoint(), bucket, key], None)
}

fn ndjson(ids: std::ops::Range<i64>) -> String {
    ids.map(|i| format!("{{\"id\":{i},\"kind\":\"k{}\"}}\n", i % 3)).collect()
}

fn array(ids: std::ops::Range<i64>) -> String {
    let items: Vec<String> = ids.map(|i| format!("{{\"id\":{i},\"kind\":\"k{}\"}}", i % 3)).collect();
    format!("[\n  {}\n]\n", items.join(",\n  "))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A flow reading `s3 { … }` with `options` into `out.jsonl` (ids), `meta.jsonl` (metadata) and
/// `dead.jsonl` (the source's `.errors`).
fn flow(dir: &Path, m: &Moto, options: &str) -> PathBuf {
    let p = dir.join("flow.phx");
    std::fs::write(
        &p,
        format!(
            r#"schema E {{ id: int, kind: string }}

source input = s3 {{
  bucket = "bkt",
  endpoint = "{endpoint}",
  region = "us-east-1",
  {options}
}} as E

sink out = file {{ path = "{out}" }}
sink meta = file {{ path = "{meta}" }}
sink dead = file {{ path = "{dead}" }}

input | out
input | select id, @bucket as bucket, @key as key, @object_size as object_size, @last_modified as last_modified, @line as line | meta
input.errors | dead
"#,
            endpoint = m.endpoint(),
            out = dir.join("out.jsonl").display(),
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

/// Run a flow that ends by itself (`poll_interval = 0s`) and check it exited 0.
fn run_to_end(flow: &Path) {
    let out = wait(run(flow).take(), Duration::from_secs(300));
    let log = std::fs::read_to_string(flow.with_file_name("phoenix.log")).unwrap_or_default();
    assert!(out.status.success(), "phoenix exited with {:?}; log:\n{log}", out.status);
}

fn stop(child: Guard) {
    signal(child.child(), "-TERM");
    let out = wait(child.take(), Duration::from_secs(90));
    assert!(out.status.success(), "phoenix exited with {:?}", out.status);
}

fn ids(dir: &Path) -> Vec<i64> {
    json_lines(&dir.join("out.jsonl")).iter().map(|v| v["id"].as_i64().unwrap()).collect()
}

fn checkpoint(m: &Moto) -> Value {
    serde_json::from_str(&get(m, "bkt", ".phoenix/input.checkpoint.json")).unwrap()
}

#[test]
fn formats_metadata_bad_objects_and_the_checkpoint() {
    let moto = Moto::start();
    let dir = temp("s3-formats");
    bucket(&moto, "bkt", None);
    // NDJSON with a line that is not JSON and one that does not fit the schema.
    let mut a = ndjson(0..100);
    a = a
        .replace("{\"id\":50,\"kind\":\"k2\"}", "not json")
        .replace("{\"id\":70,\"kind\":\"k1\"}", "{\"id\":\"seventy\"}");
    put(&moto, "bkt", "in/a.jsonl", a.as_bytes(), None);
    // A JSON array with an item of the wrong shape.
    let b = array(100..200).replace("{\"id\":150,\"kind\":\"k0\"}", "[150]");
    put(&moto, "bkt", "in/b.json", b.as_bytes(), None);
    // Gzip by extension (NDJSON) and by Content-Encoding (an array).
    put(&moto, "bkt", "in/c.jsonl.gz", &gzip(ndjson(200..300).as_bytes()), None);
    put(&moto, "bkt", "in/d.json", &gzip(array(300..400).as_bytes()), Some("gzip"));
    // Not JSON at all; truncated gzip; an array that is cut off.
    put(&moto, "bkt", "in/e.json", b"id,kind\n1,a\n", None);
    let full = gzip(ndjson(1000..3000).as_bytes());
    put(&moto, "bkt", "in/f.jsonl.gz", &full[..full.len() / 2], None);
    put(&moto, "bkt", "in/g.json", array(400..410).trim_end().trim_end_matches(']').as_bytes(), None);
    // Outside the prefix, or not matching the glob.
    put(&moto, "bkt", "other/x.jsonl", ndjson(5000..5010).as_bytes(), None);
    put(&moto, "bkt", "in/skip.txt", ndjson(6000..6010).as_bytes(), None);
    put(&moto, "bkt", "in/sub/deeper.json", ndjson(7000..7010).as_bytes(), None);

    let f = flow(&dir, &moto, r#"prefix = "in/", glob = "in/*.json*", poll_interval = 0s, concurrency = 3,"#);
    run_to_end(&f);

    let got = ids(&dir);
    let unique: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(got.len(), unique.len(), "no event twice");
    // The cut-off array's last item (409) is not followed by `,` or `]`: it may be cut too.
    let whole: BTreeSet<i64> = (0..409).filter(|i| ![50, 70, 150].contains(i)).collect();
    let from_f: BTreeSet<i64> = unique.iter().copied().filter(|i| (1000..3000).contains(i)).collect();
    assert_eq!(unique.iter().copied().filter(|i| *i < 1000).collect::<BTreeSet<_>>(), whole, "every good event");
    // The truncated gzip object: what decompressed before the damage, in order, from the start.
    assert_eq!(from_f, (1000..1000 + from_f.len() as i64).collect(), "a prefix of the truncated object");
    assert!(unique.iter().all(|i| *i < 3000), "nothing outside the prefix or the glob");

    // Metadata.
    let meta: BTreeMap<i64, Value> =
        json_lines(&dir.join("meta.jsonl")).into_iter().map(|m| (m["id"].as_i64().unwrap(), m)).collect();
    let listed = list(&moto, "bkt", "in/");
    for (id, key, line) in [
        (0, "in/a.jsonl", 1),
        (99, "in/a.jsonl", 100),
        (100, "in/b.json", 1),
        (199, "in/b.json", 100),
        (250, "in/c.jsonl.gz", 51),
        (300, "in/d.json", 1),
    ] {
        let m = &meta[&id];
        assert_eq!(
            (m["bucket"].as_str(), m["key"].as_str(), m["line"].as_i64()),
            (Some("bkt"), Some(key), Some(line)),
            "{m}"
        );
        assert_eq!(m["object_size"].as_u64(), Some(listed[key].0), "{m}");
        assert!(m["last_modified"].as_str().is_some_and(|t| t.starts_with("20")), "{m}");
    }

    // Dead letters: bad lines and items with the object, the line and the decoder's reason;
    // unreadable objects as a whole.
    let dead = json_lines(&dir.join("dead.jsonl"));
    let error = |needle: &str| -> String {
        let found: Vec<&Value> = dead.iter().filter(|d| d["error"].as_str().unwrap().contains(needle)).collect();
        assert_eq!(found.len(), 1, "one dead letter mentioning {needle:?} in {dead:#?}");
        found[0]["error"].as_str().unwrap().to_string()
    };
    assert!(error("`s3://bkt/in/a.jsonl` line 51: ").contains("invalid JSON at byte 0"));
    assert!(error("`s3://bkt/in/a.jsonl` line 71: ").contains("missing required field `kind`"));
    assert!(error("`s3://bkt/in/b.json` item 51: ").contains("expected a JSON object, got an array"));
    assert!(error("`s3://bkt/in/e.json`").contains("is not JSON: it starts with `i`"));
    assert!(error("`s3://bkt/in/f.jsonl.gz`").contains("is not valid gzip"));
    assert!(error("`s3://bkt/in/g.json`").contains("is not a JSON array of events: it ends at byte"));
    assert_eq!(dead.len(), 6, "{dead:#?}");
    let whole_object = dead.iter().find(|d| d["error"].as_str().unwrap().contains("in/e.json")).unwrap();
    let payload: Value = serde_json::from_str(whole_object["payload"].as_str().unwrap()).unwrap();
    assert_eq!((payload["bucket"].as_str(), payload["key"].as_str()), (Some("bkt"), Some("in/e.json")));

    // The checkpoint: finished objects and unreadable ones, with the ETags S3 lists.
    let cp = checkpoint(&moto);
    let etag = |k: &str| Some(listed[k].1.as_str());
    for k in ["in/a.jsonl", "in/b.json", "in/c.jsonl.gz", "in/d.json"] {
        assert_eq!(cp["done"][k].as_str(), etag(k), "{cp}");
    }
    for k in ["in/e.json", "in/f.jsonl.gz", "in/g.json"] {
        assert_eq!(cp["unreadable"][k].as_str(), etag(k), "{cp}");
    }
    assert!(listed.contains_key("in/a.jsonl"), "checkpointed objects stay where they are");

    // A second run reads nothing again; an object written again is read again.
    put(&moto, "bkt", "in/a.jsonl", ndjson(8000..8003).as_bytes(), None);
    run_to_end(&f);
    let again: Vec<i64> = ids(&dir)[got.len()..].to_vec();
    assert_eq!(again, vec![8000, 8001, 8002], "only the rewritten object is read again");
    assert_eq!(json_lines(&dir.join("dead.jsonl")).len(), 6, "unreadable objects are not dead-lettered again");
}

#[test]
fn notifications_find_objects_and_finished_ones_are_moved() {
    let moto = Moto::start();
    let dir = temp("s3-notify");
    let endpoint = moto.endpoint();
    let queue = py(&["sqs-create", &endpoint, "uploads"], None).trim().to_string();
    bucket(&moto, "bkt", Some(&queue));
    let f = flow(
        &dir,
        &moto,
        &format!(
            r#"prefix = "in/", notifications = "{queue}", on_done = "move", move_to = "done/", visibility_timeout = 10s,"#
        ),
    );
    let child = run(&f);
    // Uploaded while the flow runs: found only through their notifications (no listing).
    put(&moto, "bkt", "in/one.jsonl", ndjson(0..50).as_bytes(), None);
    put(&moto, "bkt", "in/two.json", array(50..120).as_bytes(), None);
    put(&moto, "bkt", "in/three.jsonl.gz", &gzip(ndjson(120..200).as_bytes()), None);
    put(&moto, "bkt", "elsewhere/four.jsonl", ndjson(900..910).as_bytes(), None);
    until(&dir, "every object read and moved", Duration::from_secs(120), || {
        lines(&dir.join("out.jsonl")).len() >= 200 && list(&moto, "bkt", "done/").len() == 3
    });
    let count = |q: &str| -> Value { serde_json::from_str(py(&["sqs-count", &endpoint, q], None).trim()).unwrap() };
    until(&dir, "every notification deleted", Duration::from_secs(60), || {
        let c = count(&queue);
        c["visible"] == 0 && c["in_flight"] == 0
    });
    stop(child);
    let got = ids(&dir);
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), (0..200).collect(), "every event");
    assert_eq!(got.len(), 200, "each once");
    assert!(list(&moto, "bkt", "in/").is_empty(), "moved away");
    let moved: Vec<String> = list(&moto, "bkt", "done/").into_keys().collect();
    assert_eq!(moved, ["done/one.jsonl", "done/three.jsonl.gz", "done/two.json"]);
    assert_eq!(get(&moto, "bkt", "done/one.jsonl"), ndjson(0..50), "moved intact");
    assert_eq!(list(&moto, "bkt", "elsewhere/").len(), 1, "objects outside the prefix are left alone");
}

/// Peak resident memory of a running process, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Run to the end, sampling the process's peak RSS until it exits.
fn run_measuring(flow: &Path) -> u64 {
    let child = run(flow);
    let pid = child.child().id();
    let mut peak = 0;
    let mut child = child.take();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        peak = peak_rss(pid).unwrap_or(0).max(peak);
        assert!(start.elapsed() < Duration::from_secs(600), "the flow did not end within 600s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        child.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(flow.with_file_name("phoenix.log")).unwrap()
    );
    peak
}

#[test]
fn a_big_array_streams_in_flat_memory() {
    let moto = Moto::start();
    bucket(&moto, "bkt", None);
    // The same flow over a small array and over one of ~200 MB.
    let small_dir = temp("s3-small-array");
    put(&moto, "bkt", "small/a.json", array(0..1000).as_bytes(), None);
    let small =
        run_measuring(&flow(&small_dir, &moto, r#"prefix = "small/", poll_interval = 0s, on_done = "delete","#));
    let dir = temp("s3-big-array");
    let events = 500_000;
    let size: u64 = py(&["s3-big-array", &moto.endpoint(), "bkt", "big/a.json", &events.to_string(), "380"], None)
        .trim()
        .parse()
        .unwrap();
    let started = Instant::now();
    let big = run_measuring(&flow(&dir, &moto, r#"prefix = "big/", poll_interval = 0s, on_done = "delete","#));
    let took = started.elapsed();
    eprintln!(
        "array of {size} bytes, {events} events: {took:?}, peak RSS {} MiB (a 1000-event array: {} MiB)",
        big >> 20,
        small >> 20
    );
    assert_eq!(lines(&dir.join("out.jsonl")).len(), events, "every item an event");
    assert!(list(&moto, "bkt", "big/").is_empty(), "deleted once done");
    assert!(big < size / 2, "peak RSS {big} for an object of {size} bytes: not streamed");
    assert!(big < small + (128 << 20), "peak RSS {big} vs {small} for a small object: memory grows with the object");
}

#[test]
fn sigkill_mid_object_then_restart_duplicates_only_the_unfinished() {
    let moto = Moto::start();
    let dir = temp("s3-kill");
    bucket(&moto, "bkt", None);
    let per = 40_000;
    let objects = 8;
    for n in 0..objects {
        put(&moto, "bkt", &format!("in/{n:02}.jsonl"), ndjson(n * per..(n + 1) * per).as_bytes(), None);
    }
    let f = flow(&dir, &moto, r#"prefix = "in/", poll_interval = 0s, concurrency = 1, batch_size = 200,"#);
    let child = run(&f);
    until(&dir, "some objects finished", Duration::from_secs(120), || {
        lines(&dir.join("out.jsonl")).len() as i64 >= per * 2 + per / 2
    });
    signal(child.child(), "-KILL");
    drop(child);
    let before = ids(&dir);
    let cp = checkpoint(&moto);
    let finished: BTreeSet<i64> = cp["done"].as_object().unwrap().keys().map(|k| k[3..5].parse().unwrap()).collect();
    assert!(!finished.is_empty() && (finished.len() as i64) < objects, "killed mid-run: {cp}");
    for n in &finished {
        let all: BTreeSet<i64> = (n * per..(n + 1) * per).collect();
        assert!(
            all.is_subset(&before.iter().copied().collect()),
            "object {n} is recorded only once all its events are written"
        );
    }
    run_to_end(&f);
    let after = ids(&dir);
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for id in &after {
        *seen.entry(*id).or_default() += 1;
    }
    assert_eq!(seen.keys().copied().collect::<BTreeSet<_>>(), (0..objects * per).collect(), "ids complete");
    let twice: BTreeSet<i64> = seen.iter().filter(|(_, c)| **c > 1).map(|(id, _)| id / per).collect();
    assert!(twice.is_disjoint(&finished), "objects finished before the kill were read again: {twice:?}");
    assert!(twice.len() <= 1, "duplicates only from the object being read at the kill: {twice:?}");
    assert!(seen.values().all(|c| *c <= 2));
}

#[test]
fn the_sink_writes_objects_boto3_reads_back_exactly_once() {
    let moto = Moto::start();
    let dir = temp("s3-sink");
    bucket(&moto, "archive", None);
    let n = 40_000;
    let input: String = (0..n)
        .map(|i| {
            let day = 1 + i % 3;
            format!("{{\"id\":{i},\"ts\":\"2026-01-0{day}T10:00:00Z\",\"pad\":\"{:0>150}\"}}\n", i * 7919)
        })
        .collect();
    std::fs::write(dir.join("in.jsonl"), &input).unwrap();
    let f = dir.join("flow.phx");
    std::fs::write(
        &f,
        format!(
            r#"schema E {{ id: int, ts: timestamp }}
source input = file {{ path = "{input}" }} as E
sink daily = s3 {{
  bucket = "archive", endpoint = "{endpoint}",
  key = 'orders/' || format_timestamp(ts, '%Y/%m/%d') || '/',
  compression = "gzip", max_events = 4000, max_age = 100ms,
}}
sink whole = s3 {{ bucket = "archive", endpoint = "{endpoint}", key = 'whole/', max_events = 1000000, max_age = 10s, part_size = 5MiB }}
sink dead = file {{ path = "{dead}" }}
input | daily
input | whole
daily.errors | dead
whole.errors | dead
"#,
            input = dir.join("in.jsonl").display(),
            endpoint = moto.endpoint(),
            dead = dir.join("dead.jsonl").display(),
        ),
    )
    .unwrap();
    run_to_end(&f);
    assert!(lines(&dir.join("dead.jsonl")).is_empty());
    let want: Vec<String> = input.lines().map(String::from).collect();
    // Gzip objects under one prefix per day, each event exactly once, as it arrived.
    let daily = list(&moto, "archive", "orders/");
    assert!(daily.len() >= 3, "{daily:?}");
    let mut got: Vec<String> = Vec::new();
    for (key, (_, _, encoding)) in &daily {
        assert!(key.ends_with(".jsonl.gz") && encoding.as_deref() == Some("gzip"), "{key} {encoding:?}");
        let day = &key["orders/2026/01/".len().."orders/2026/01/".len() + 2];
        for line in get(&moto, "archive", key).lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert!(v["ts"].as_str().unwrap().starts_with(&format!("2026-01-{day}")), "{key}: {line}");
            got.push(line.to_string());
        }
    }
    got.sort();
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(got, sorted, "every event exactly once in the daily objects");
    // One object past `part_size`: a multipart upload (its ETag has the part count).
    let whole = list(&moto, "archive", "whole/");
    assert_eq!(whole.len(), 1, "{whole:?}");
    let (key, (size, etag, _)) = whole.iter().next().unwrap();
    assert!(*size > 5 << 20 && etag.contains('-'), "{key}: {size} bytes, ETag {etag}");
    let mut all: Vec<String> = get(&moto, "archive", key).lines().map(String::from).collect();
    all.sort();
    assert_eq!(all, sorted, "every event exactly once in the multipart object");
}

/// S3 goes away while events are on their way to it, and comes back: the sink retries with
/// growing delays, an HTTP request is answered only once its events are in the bucket, and the
/// bucket then holds each of them exactly once; nothing is dead-lettered.
#[test]
fn the_sink_rides_out_an_s3_outage() {
    let mut moto = Moto::start();
    let dir = temp("s3-outage");
    bucket(&moto, "archive", None);
    let addr = format!("127.0.0.1:{}", support::free_port());
    let f = dir.join("flow.phx");
    std::fs::write(
        &f,
        format!(
            r#"schema E {{ id: int }}
source api = http {{ address = "{addr}", path = "/events" }} as E
sink archive = s3 {{
  bucket = "archive", endpoint = "{endpoint}", key = 'events/',
  max_age = 200ms, max_attempts = 0, backoff_min = 100ms, backoff_max = 1s,
}}
sink dead = file {{ path = "{dead}" }}
api | archive
archive.errors | dead
"#,
            endpoint = moto.endpoint(),
            dead = dir.join("dead.jsonl").display(),
        ),
    )
    .unwrap();
    let child = run(&f);
    until(&dir, "the http source listening", Duration::from_secs(60), || std::net::TcpStream::connect(&addr).is_ok());
    let post = |ids: std::ops::Range<i64>| {
        let body: String = ids.map(|i| format!("{{\"id\":{i}}}\n")).collect();
        support::curl(&addr, "POST", "/events", Some("application/x-ndjson"), Some(body.as_bytes()))
    };
    let archived = |m: &Moto| -> Vec<i64> {
        list(m, "archive", "events/")
            .keys()
            .flat_map(|k| {
                get(m, "archive", k)
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_i64().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    // Before the outage: written and answered as usual.
    assert_eq!(post(0..100).0, 200);
    let mut before = archived(&moto);
    before.sort();
    assert_eq!(before, (0..100).collect::<Vec<_>>());

    // The outage: every connection refused. The request waits for its events to be written.
    moto.kill();
    let down = Instant::now();
    let waiting = std::thread::scope(|s| {
        let request = s.spawn(|| post(100..1100));
        // Down until the sink has announced its third retry: each of its attempts also spends
        // the AWS SDK's own retries on the refused port (~3 s on a loaded machine), so a fixed
        // wait could end the outage after two.
        until(&dir, "the archive sink's third retry", Duration::from_secs(120), || {
            std::fs::read_to_string(dir.join("phoenix.log"))
                .is_ok_and(|l| l.lines().any(|l| l.contains("retrying") && l.contains(" attempt=3 ")))
        });
        assert!(!request.is_finished(), "answered while S3 was down");
        // S3 is back (empty: moto keeps nothing across a restart), the bucket made again.
        moto.restart();
        bucket(&moto, "archive", None);
        let (status, answer) = request.join().unwrap();
        assert_eq!((status, answer.as_str()), (200, r#"{"accepted":1000,"rejected":0,"errors":[]}"#));
        down.elapsed()
    });
    // Everything the outage held up, each exactly once; the objects of before went with the
    // old server.
    let mut after = archived(&moto);
    after.sort();
    assert_eq!(after, (100..1100).collect::<Vec<_>>(), "every event written once after the outage");
    assert_eq!(post(1100..1110).0, 200, "and the sink goes on");
    stop(child);
    assert!(lines(&dir.join("dead.jsonl")).is_empty(), "nothing dead-lettered with max_attempts = 0");

    // Retried with backoff: the delay announced after attempt n lies between `backoff_min`
    // doubled n - 1 and n times, and once that reaches `backoff_max`, between half of it and
    // it (the cap holds with the jitter); so the outage took a handful of attempts, not a busy
    // loop.
    let log = std::fs::read_to_string(dir.join("phoenix.log")).unwrap();
    let field = |l: &str, name: &str| -> Option<String> {
        Some(l.split(&format!(" {name}=")).nth(1)?.split_whitespace().next()?.to_string())
    };
    let retries: Vec<(u32, Duration)> = log
        .lines()
        .filter(|l| l.contains("sink archive") && l.contains("retrying"))
        .filter_map(|l| {
            let attempt: u32 = field(l, "attempt")?.parse().ok()?;
            let d = field(l, "retry_in")?;
            let secs = match d.strip_suffix("ms") {
                Some(ms) => ms.parse::<f64>().ok()? / 1000.0,
                None => d.strip_suffix('s')?.parse::<f64>().ok()?,
            };
            Some((attempt, Duration::from_secs_f64(secs)))
        })
        .collect();
    eprintln!("outage of {waiting:?}: {} retries {retries:?}", retries.len());
    assert!(retries.len() >= 3, "retried during the outage: {retries:?}\n{log}");
    assert!(retries.len() <= 30, "backoff, not a busy loop: {retries:?}");
    assert!(retries.iter().any(|(attempt, _)| *attempt >= 3), "the same events tried again and again: {retries:?}");
    for (attempt, delay) in &retries {
        let ceiling = Duration::from_millis(100 << (*attempt).min(5)).min(Duration::from_secs(1));
        let floor = (ceiling / 2).max(Duration::from_millis(100));
        // The log prints the delay rounded; a microsecond either side is that rounding.
        let slack = Duration::from_micros(1);
        assert!(
            *delay + slack >= floor && *delay <= ceiling + slack,
            "attempt {attempt}: {delay:?} outside [{floor:?}, {ceiling:?}]"
        );
    }
}

/// An object the source's credentials may list but not read (an IAM policy denies GetObject
/// on it, enforced by moto): dead-lettered whole with S3's answer and recorded, the others read;
/// a second run reads nothing again and dead-letters nothing again.
#[test]
fn an_object_access_denied_is_dead_lettered_once_and_the_rest_read() {
    let (cp, listed) = access_denied_twice("s3-denied", "", None);
    for k in ["a.jsonl", "b.json"] {
        assert_eq!(cp["done"][k].as_str(), Some(listed[k].as_str()), "{cp}");
    }
}

/// As above with `on_done = "move"`: the readable objects are moved under `move_to`; the
/// denied one cannot be moved under `unreadable/` (on AWS the copy needs read access; moto
/// does not check that, so the policy also denies writing there), so it stays in place,
/// recorded in the checkpoint, and a restart does not dead-letter it again.
#[test]
fn with_move_an_object_access_denied_stays_recorded_and_is_dead_lettered_once() {
    let (cp, listed) =
        access_denied_twice("s3-denied-move", r#"on_done = "move", move_to = "done/","#, Some("unreadable/"));
    assert!(cp["done"].as_object().is_some_and(|d| d.is_empty()), "finished objects are moved, not recorded: {cp}");
    let keys: BTreeSet<&str> = listed.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([".phoenix/input.checkpoint.json", "done/a.jsonl", "done/b.json", "secret.jsonl"]),
        "the readable objects moved, the denied one left in place"
    );
}

/// Three objects at the bucket's root, one of them (`secret.jsonl`) denied to the flow's
/// credentials (and writing under `deny_put`, if given); the flow (with `options`) runs twice.
/// Checks what both cases share and returns the checkpoint and the bucket's keys and ETags
/// after the second run.
fn access_denied_twice(name: &str, options: &str, deny_put: Option<&str>) -> (Value, BTreeMap<String, String>) {
    // Setting up takes a handful of requests; the test spends what is left of the 100 before
    // the flow starts (`auth-on`), so every request of the flow is checked.
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "100")]);
    let dir = temp(name);
    bucket(&moto, "bkt", None);
    put(&moto, "bkt", "a.jsonl", ndjson(0..10).as_bytes(), None);
    put(&moto, "bkt", "secret.jsonl", ndjson(100..110).as_bytes(), None);
    put(&moto, "bkt", "b.json", array(10..20).as_bytes(), None);
    let endpoint = moto.endpoint();
    let mut deny = vec!["s3-deny-user", endpoint.as_str(), "bkt", "secret.jsonl"];
    deny.extend(deny_put);
    let user: Value = serde_json::from_str(py(&deny, None).trim()).unwrap();
    let (id, secret) = (user["id"].as_str().unwrap().to_string(), user["secret"].as_str().unwrap().to_string());
    py(&["auth-on", &moto.endpoint()], None);
    let creds = [("AWS_ACCESS_KEY_ID", id.as_str()), ("AWS_SECRET_ACCESS_KEY", secret.as_str())];
    let as_user = |args: &[&str]| -> String {
        let env: Vec<(&str, &str)> = AWS_ENV.iter().copied().chain(creds.iter().copied()).collect();
        python_client(args, None, &env)
    };
    // Objects at the bucket's root and no `prefix`: once moto checks signatures, it refuses a
    // ListObjectsV2 whose `prefix` holds a `/` as the AWS SDK for Rust signs it
    // (SignatureDoesNotMatch, while the same listing from boto3 passes).
    let f = flow(&dir, &moto, &format!(r#"glob = "*.json*", poll_interval = 0s, {options}"#));
    let run_as_user = || {
        let out = wait(
            phoenix_run(&f, &dir.join("phoenix.log"))
                .envs(AWS_ENV.iter().copied())
                .envs(creds.iter().copied())
                .spawn()
                .unwrap(),
            Duration::from_secs(120),
        );
        let log = std::fs::read_to_string(dir.join("phoenix.log")).unwrap_or_default();
        assert!(out.status.success(), "phoenix exited with {:?}; log:\n{log}", out.status);
    };
    run_as_user();

    let got: BTreeSet<i64> = ids(&dir).into_iter().collect();
    assert_eq!(got, (0..20).collect(), "the readable objects, and nothing of the denied one");
    assert_eq!(ids(&dir).len(), 20, "each once");
    let dead = json_lines(&dir.join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let error = dead[0]["error"].as_str().unwrap();
    assert!(error.contains("`s3://bkt/secret.jsonl` cannot be read") && error.contains("AccessDenied"), "{error}");
    let payload: Value = serde_json::from_str(dead[0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["key"], "secret.jsonl", "{payload}");

    // Nothing read again, nothing dead-lettered again.
    run_as_user();
    assert_eq!(ids(&dir).len(), 20, "nothing read twice");
    assert_eq!(json_lines(&dir.join("dead.jsonl")).len(), 1, "the denied object is not dead-lettered again");

    // The denied object is recorded as unreadable, under the ETag S3 lists for it.
    let cp: Value =
        serde_json::from_str(&as_user(&["s3-get", &moto.endpoint(), "bkt", ".phoenix/input.checkpoint.json"])).unwrap();
    let listed: BTreeMap<String, String> =
        serde_json::from_str(&as_user(&["s3-etags", &moto.endpoint(), "bkt"])).unwrap();
    assert_eq!(cp["unreadable"]["secret.jsonl"].as_str(), Some(listed["secret.jsonl"].as_str()), "{cp}");
    (cp, listed)
}

/// Objects that are not JSON or not valid gzip, with `on_done = "move"`: each dead-lettered
/// once and moved, intact, under `move_unreadable_to` (by default `unreadable/` beside
/// `move_to`), the good ones under `move_to`; nothing is recorded, and a restart reads nothing
/// and dead-letters nothing again. With `on_done = "delete"` the unreadable ones are not
/// deleted: they stay, recorded in the checkpoint, and a restart leaves them alone too.
#[test]
fn unreadable_objects_are_dead_lettered_once_with_move_and_delete() {
    let moto = Moto::start();
    bucket(&moto, "bkt", None);
    let not_json = b"id,kind\n1,a\n";
    let full = gzip(ndjson(1000..3000).as_bytes());
    let cut = &full[..full.len() / 2];
    for prefix in ["m/", "d/"] {
        put(&moto, "bkt", &format!("{prefix}in/a.jsonl"), ndjson(0..10).as_bytes(), None);
        put(&moto, "bkt", &format!("{prefix}in/e.json"), not_json, None);
        put(&moto, "bkt", &format!("{prefix}in/f.jsonl.gz"), cut, None);
    }
    let moving = temp("s3-unreadable-move");
    let deleting = temp("s3-unreadable-delete");
    let runs = [
        (&moving, r#"prefix = "m/in/", poll_interval = 0s, on_done = "move", move_to = "m/done/","#),
        (
            &deleting,
            r#"prefix = "d/in/", poll_interval = 0s, on_done = "delete", checkpoint_key = "d/checkpoint.json","#,
        ),
    ];
    for round in 1..=2 {
        for (dir, options) in runs {
            run_to_end(&flow(dir, &moto, options));
            let all = ids(dir);
            assert_eq!(all.len(), all.iter().collect::<BTreeSet<_>>().len(), "round {round}: no event twice");
            let dead = json_lines(&dir.join("dead.jsonl"));
            assert_eq!(dead.len(), 2, "round {round}: each unreadable object dead-lettered once: {dead:#?}");
            let good: Vec<i64> = ids(dir).into_iter().filter(|i| *i < 1000).collect();
            assert_eq!(good, (0..10).collect::<Vec<_>>(), "round {round}: the good object read once");
        }
    }

    let moved = list(&moto, "bkt", "m/");
    let keys: Vec<&str> = moved.keys().map(String::as_str).collect();
    assert_eq!(keys, ["m/done/a.jsonl", "m/unreadable/e.json", "m/unreadable/f.jsonl.gz"], "{moved:#?}");
    assert_eq!(get(&moto, "bkt", "m/unreadable/e.json").as_bytes(), not_json, "moved intact");
    assert!(list(&moto, "bkt", ".phoenix/").is_empty(), "nothing to record: every object was moved");

    let kept = list(&moto, "bkt", "d/");
    let keys: Vec<&str> = kept.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["d/checkpoint.json", "d/in/e.json", "d/in/f.jsonl.gz"],
        "the good object deleted, the others kept"
    );
    let cp: Value = serde_json::from_str(&get(&moto, "bkt", "d/checkpoint.json")).unwrap();
    let unreadable: BTreeMap<String, Value> = kept
        .iter()
        .filter(|(k, _)| k.starts_with("d/in/"))
        .map(|(k, v)| (k.clone(), Value::from(v.1.as_str())))
        .collect();
    assert_eq!(cp["unreadable"], Value::from(serde_json::Map::from_iter(unreadable)), "{cp}");
    assert!(cp["done"].as_object().is_some_and(|d| d.is_empty()), "{cp}");
}
