//! The commerce scenario end to end, as a user runs it: `examples/commerce_kafka.phx` and
//! `examples/commerce_sqs.phx` unchanged, run by the `phoenix` binary, events POSTed with the
//! real `curl`, the outputs read by independent clients (confluent-kafka and boto3, in
//! `support/clients.py`) from real servers on 127.0.0.1 (tansu, moto_server).
//!
//! `cargo test -p phoenix-engine --test commerce`

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use std::time::Duration;
use support::servers::{AWS_ENV, Moto, Tansu, python_client};
use support::{Guard, curl, free_port, json_lines, lines, phoenix_run, signal, temp, until, wait};

const TOPICS: [&str; 3] = ["products", "orders", "suppliers"];

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

/// The topic (or queue) each event type is routed to.
fn topic_of(kind: &str) -> &'static str {
    match kind {
        "product" => "products",
        "order" => "orders",
        "supplier" => "suppliers",
        other => panic!("no topic for {other}"),
    }
}

fn event(id: &str, kind: &str, minute: usize) -> String {
    format!(r#"{{"id":"{id}","type":"{kind}","ts":"2026-03-01T10:{:02}:00Z","amount":{minute}.5}}"#, minute % 60)
}

/// Valid events of `kinds` in turn, ids `p-7`, `o-8`, `s-9`…
fn valid(range: std::ops::Range<usize>, kinds: &[&str]) -> Vec<(String, String)> {
    range
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            let id = format!("{}-{i}", &kind[..1]);
            (id.clone(), event(&id, kind, i))
        })
        .collect()
}

/// What the requests sent, and where each event must end up.
struct Sent {
    /// Valid events: id → type.
    valid: BTreeMap<String, String>,
}

impl Sent {
    fn ids_for(&self, topic: &str) -> BTreeSet<String> {
        self.valid.iter().filter(|(_, k)| topic_of(k) == topic).map(|(id, _)| id.clone()).collect()
    }
}

/// The malformed line of the NDJSON request (cut off mid-object).
const MALFORMED: &str = r#"{"id":"bad-1","type":"order","ts":"2026-03-01T10:00:00Z""#;
/// An order without its required `ts`.
const MISSING_TS: &str = r#"{"id":"m-1","type":"order","amount":5}"#;

/// The answer to the NDJSON request: which events went to `.errors`, and why.
const NDJSON_ANSWER: &str = concat!(
    r#"{"accepted":46,"rejected":2,"errors":["#,
    r#"{"index":20,"error":"invalid JSON at byte 56: the text ends before the object does"},"#,
    r#"{"index":30,"error":"missing required field `ts`"}]}"#
);

/// POST the scenario's requests and check every answer. `delivered` is called after each
/// accepted request (numbered from 1): a 200 promises the events are already written everywhere.
fn ingest(addr: &str, rejected: &Path, mut delivered: impl FnMut(usize, &Sent)) -> Sent {
    let mut sent = Sent { valid: BTreeMap::new() };

    // 1. NDJSON: 45 products and orders (the first suppliers come later, so their topic is
    // created while the flow consumes the others), an unknown type, a malformed line and an
    // event missing a field.
    let first = valid(0..45, &["product", "order"]);
    let mut body: Vec<String> = first.iter().map(|(_, e)| e.clone()).collect();
    body.insert(10, r#"{"id":"x-1","type":"invoice","ts":"2026-03-01T10:00:00Z"}"#.into());
    body.insert(20, MALFORMED.into());
    body.insert(30, MISSING_TS.into());
    let text = body.join("\n") + "\n";
    let (status, answer) = curl(addr, "POST", "/events", Some("application/x-ndjson"), Some(text.as_bytes()));
    assert_eq!((status, answer.as_str()), (200, NDJSON_ANSWER), "NDJSON request");
    sent.valid.extend(first.iter().map(|(id, e)| (id.clone(), kind_of(e))));
    // The file sink flushed before the answer: the refused events are there now, no waiting.
    let refused: BTreeSet<String> = json_lines(rejected).iter().map(rejected_id).collect();
    assert_eq!(refused, ["bad-1", "m-1", "x-1"].map(String::from).into(), "rejected before the 200");
    delivered(1, &sent);

    // 2. A JSON array (pretty-printed) with another unknown type.
    let second = valid(100..130, &["product", "order", "supplier"]);
    let mut items: Vec<String> = second.iter().map(|(_, e)| format!("  {e}")).collect();
    items.push(r#"  {"id": "x-2", "type": "refund", "ts": "2026-03-01T11:00:00Z"}"#.into());
    let text = format!("[\n{}\n]\n", items.join(",\n"));
    let (status, answer) = curl(addr, "POST", "/events", Some("application/json"), Some(text.as_bytes()));
    assert_eq!((status, answer.as_str()), (200, r#"{"accepted":31,"rejected":0,"errors":[]}"#), "JSON array request");
    sent.valid.extend(second.iter().map(|(id, e)| (id.clone(), kind_of(e))));
    delivered(2, &sent);

    // 3. One object, spread over lines, with no content type at all.
    let one =
        "{\n  \"id\": \"o-200\",\n  \"type\": \"order\",\n  \"ts\": \"2026-03-01T12:00:00Z\",\n  \"amount\": 99\n}\n";
    let (status, answer) = curl(addr, "POST", "/events", None, Some(one.as_bytes()));
    assert_eq!((status, answer.as_str()), (200, r#"{"accepted":1,"rejected":0,"errors":[]}"#), "single object request");
    sent.valid.insert("o-200".into(), "order".into());
    delivered(3, &sent);

    // Bad requests are refused whole, and nothing of them reaches the flow.
    let refusal = |status: u16, answer: &str, says: &str| {
        let v: Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"));
        assert!(v["error"].as_str().is_some_and(|e| e.contains(says)), "{status} {answer}");
    };
    let (status, answer) = curl(addr, "POST", "/events", Some("application/json"), Some(b""));
    assert_eq!(status, 400, "empty body: {answer}");
    refusal(status, &answer, "empty body");
    let broken = br#"[{"id":"z-1","type":"order","ts":"2026-03-01T10:00:00Z"}, {"id":"z-2","#;
    let (status, answer) = curl(addr, "POST", "/events", Some("application/json"), Some(broken));
    assert_eq!(status, 400, "broken array: {answer}");
    refusal(status, &answer, "not a JSON array");
    let (status, answer) = curl(addr, "POST", "/orders", None, Some(event("z-3", "order", 1).as_bytes()));
    assert_eq!(status, 404, "wrong path: {answer}");
    refusal(status, &answer, "`/events`");
    let (status, answer) = curl(addr, "GET", "/events", None, None);
    assert_eq!(status, 405, "GET: {answer}");
    sent
}

fn kind_of(event: &str) -> String {
    let v: Value = serde_json::from_str(event).unwrap();
    v["type"].as_str().unwrap().to_string()
}

/// The id of a rejected-file line: an event with a `reason`, or a dead letter's payload.
fn rejected_id(v: &Value) -> String {
    if let Some(id) = v["id"].as_str() {
        return id.to_string();
    }
    let payload = v["payload"].as_str().unwrap_or_else(|| panic!("neither an event nor a dead letter: {v}"));
    let start = payload.find("\"id\":\"").map(|i| i + 6).unwrap_or_else(|| panic!("no id in {payload}"));
    payload[start..].split('"').next().unwrap().to_string()
}

/// Every refused event in the rejected file once, with its reason; nothing else there.
fn check_rejected(path: &Path) {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for v in json_lines(path) {
        by_id.entry(rejected_id(&v)).or_default().push(v);
    }
    assert_eq!(
        by_id.keys().cloned().collect::<BTreeSet<_>>(),
        ["bad-1", "m-1", "x-1", "x-2"].map(String::from).into(),
        "rejected: {by_id:?}"
    );
    assert!(by_id.values().all(|v| v.len() == 1), "each rejected once: {by_id:?}");
    let one = |id: &str| by_id[id][0].clone();
    for (id, kind) in [("x-1", "invoice"), ("x-2", "refund")] {
        let v = one(id);
        assert_eq!((v["type"].as_str(), v["reason"].as_str()), (Some(kind), Some("unknown type")), "{v}");
    }
    let (bad, missing) = (one("bad-1"), one("m-1"));
    assert_eq!(bad["payload"], MALFORMED, "{bad}");
    assert!(
        bad["error"].as_str().is_some_and(|e| e == "invalid JSON at byte 56: the text ends before the object does"),
        "{bad}"
    );
    assert_eq!(missing["payload"], MISSING_TS, "{missing}");
    assert!(missing["error"].as_str().is_some_and(|e| e.contains("missing required field `ts`")), "{missing}");
    for d in [&bad, &missing] {
        assert!(d["error"].as_str().is_some_and(|e| !e.is_empty()), "{d}");
        assert!(d["node"].as_str().is_some_and(|n| n.starts_with("source api")), "the http source's: {d}");
    }
}

/// Start the example; its log goes to `phoenix.log` in `dir` (shown when a wait times out).
fn run(flow: &Path, dir: &Path, env: &[(&str, String)]) -> Guard {
    phoenix_run(flow, &dir.join("phoenix.log"))
        .env("REJECTED_FILE", dir.join("rejected.jsonl"))
        .env("AUDIT_FILE", dir.join("audit.jsonl"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(dir)
        .spawn()
        .map(Guard::new)
        .unwrap()
}

fn listening(addr: &str) -> bool {
    TcpStream::connect(addr).is_ok()
}

/// SIGTERM drains and exits 0.
fn stop(child: Guard, dir: &Path) {
    signal(child.child(), "-TERM");
    let out = wait(child.take(), Duration::from_secs(90));
    assert!(
        out.status.success(),
        "phoenix exited with {:?}; log:\n{}",
        out.status,
        std::fs::read_to_string(dir.join("phoenix.log")).unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------------
// Kafka

fn topics(t: &Tansu) -> BTreeMap<String, i64> {
    serde_json::from_str(python_client(&["kafka-topics", &t.brokers()], None, &[]).trim()).unwrap()
}

/// Everything in `topic` (read from the beginning until nothing arrives for 3 s).
fn read_topic(t: &Tansu, topic: &str, partitions: i64) -> Vec<Value> {
    let args = ["kafka-read", &t.brokers(), topic, &partitions.to_string(), "1000000", "120", "3"];
    python_client(&args, None, &[]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn commerce_on_kafka() {
    let tansu = Tansu::start();
    let dir = temp("commerce-kafka");
    let addr = format!("127.0.0.1:{}", free_port());
    let flow = example("commerce_kafka.phx");
    let child = run(&flow, &dir, &[("KAFKA_BROKERS", tansu.brokers()), ("HTTP_ADDRESS", addr.clone())]);
    until(&dir, "the http source listening", Duration::from_secs(60), || listening(&addr));
    // Nobody made the topics: the sink's `create_topics = true` has to.
    let before = topics(&tansu);
    assert!(TOPICS.iter().all(|t| !before.contains_key(*t)), "topics exist before any event: {before:?}");

    let rejected = dir.join("rejected.jsonl");
    let audit = dir.join("audit.jsonl");
    let sent = ingest(&addr, &rejected, |request, sent| {
        // A 200 means every event is in its topic already.
        let have = topics(&tansu);
        for topic in TOPICS {
            let want = sent.ids_for(topic);
            if want.is_empty() {
                assert!(!have.contains_key(topic), "{topic} created before any event went there");
                continue;
            }
            let Some(&partitions) = have.get(topic) else { panic!("topic {topic} missing after a 200: {have:?}") };
            let got: BTreeSet<String> = read_topic(&tansu, topic, partitions).iter().map(key).collect();
            assert!(want.is_subset(&got), "{topic}: {:?} missing after a 200", want.difference(&got));
        }
        if request == 1 {
            // The audit group consumes `products` and `orders` before `suppliers` exists: that
            // topic must be found once it is created (librdkafka alone looks every 5 minutes).
            until(&dir, "the audit pipeline reading the first request", Duration::from_secs(120), || {
                lines(&audit).len() >= sent.valid.len()
            });
        }
    });

    // Every id in exactly its topic, once, keyed by its id.
    let have = topics(&tansu);
    let mut read: BTreeMap<String, (String, i64, i64)> = BTreeMap::new();
    for topic in TOPICS {
        let partitions = have[topic];
        assert!(partitions >= 1, "{topic}: {have:?}");
        for m in read_topic(&tansu, topic, partitions) {
            let v: Value = serde_json::from_str(m["value"].as_str().unwrap()).unwrap();
            let id = v["id"].as_str().unwrap().to_string();
            assert_eq!(m["key"].as_str(), Some(id.as_str()), "key = id: {m}");
            assert_eq!(topic_of(v["type"].as_str().unwrap()), topic, "{id} in the wrong topic");
            let at = (topic.to_string(), m["partition"].as_i64().unwrap(), m["offset"].as_i64().unwrap());
            assert!(read.insert(id.clone(), at).is_none(), "{id} written twice");
        }
    }
    assert_eq!(read.keys().cloned().collect::<BTreeSet<_>>(), sent.valid.keys().cloned().collect(), "every event");

    // The second pipeline (group `commerce-audit`) reads each message once, where it is.
    until(&dir, "the audit pipeline to read every event", Duration::from_secs(120), || {
        lines(&audit).len() >= read.len()
    });
    let mut audited: BTreeMap<String, (String, i64, i64)> = BTreeMap::new();
    for a in json_lines(&audit) {
        let id = a["id"].as_str().unwrap().to_string();
        let at =
            (a["topic"].as_str().unwrap().to_string(), a["partition"].as_i64().unwrap(), a["offset"].as_i64().unwrap());
        assert!(audited.insert(id.clone(), at).is_none(), "{id} audited twice");
    }
    assert_eq!(audited, read, "the audit file holds every event with its topic, partition and offset");

    stop(child, &dir);
    check_rejected(&rejected);
}

fn key(m: &Value) -> String {
    m["key"].as_str().unwrap_or_default().to_string()
}

// ---------------------------------------------------------------------------------------------
// SQS

fn sqs(args: &[&str]) -> String {
    python_client(args, None, AWS_ENV)
}

/// Receive (and delete) every message of a queue: the ids in the bodies, repeats kept.
fn drain(m: &Moto, url: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = sqs(&["sqs-receive", &m.endpoint(), url, "1000000", "3"]);
        if got.trim().is_empty() {
            return out;
        }
        for l in got.lines() {
            let msg: Value = serde_json::from_str(l).unwrap();
            let body: Value = serde_json::from_str(msg["body"].as_str().unwrap()).unwrap();
            out.push(body["id"].as_str().unwrap().to_string());
        }
    }
}

fn in_queue(m: &Moto, url: &str) -> (i64, i64) {
    let v: Value = serde_json::from_str(sqs(&["sqs-count", &m.endpoint(), url]).trim()).unwrap();
    (v["visible"].as_i64().unwrap(), v["in_flight"].as_i64().unwrap())
}

#[test]
fn commerce_on_sqs() {
    let moto = Moto::start();
    let dir = temp("commerce-sqs");
    let addr = format!("127.0.0.1:{}", free_port());
    let url: BTreeMap<&str, String> =
        TOPICS.iter().map(|q| (*q, sqs(&["sqs-create", &moto.endpoint(), q]).trim().to_string())).collect();
    let mut env: Vec<(&str, String)> = AWS_ENV.iter().map(|(k, v)| (*k, v.to_string())).collect();
    env.extend([
        ("HTTP_ADDRESS", addr.clone()),
        ("SQS_ENDPOINT", moto.endpoint()),
        ("PRODUCTS_QUEUE", url["products"].clone()),
        ("ORDERS_QUEUE", url["orders"].clone()),
        ("SUPPLIERS_QUEUE", url["suppliers"].clone()),
    ]);
    let child = run(&example("commerce_sqs.phx"), &dir, &env);
    until(&dir, "the http source listening", Duration::from_secs(60), || listening(&addr));

    let rejected = dir.join("rejected.jsonl");
    let mut received: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let sent = ingest(&addr, &rejected, |_, sent| {
        // A 200 means every event is in its queue already (the orders queue is the flow's own
        // to consume, so only products and suppliers are looked at).
        for q in ["products", "suppliers"] {
            let got = received.entry(q).or_default();
            got.extend(drain(&moto, &url[q]));
            let have: BTreeSet<String> = got.iter().cloned().collect();
            let want = sent.ids_for(q);
            assert!(want.is_subset(&have), "{q}: {:?} missing after a 200", want.difference(&have));
        }
    });
    for q in ["products", "suppliers"] {
        let got = received.entry(q).or_default();
        got.extend(drain(&moto, &url[q]));
        let unique: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(unique, sent.ids_for(q), "{q} holds exactly its events");
        assert_eq!(got.len(), unique.len(), "{q}: each event sent once");
    }

    // The second pipeline consumes the orders queue into the audit file and deletes what it
    // wrote.
    let audit = dir.join("audit.jsonl");
    let orders = sent.ids_for("orders");
    until(&dir, "every order audited and deleted", Duration::from_secs(120), || {
        let seen: BTreeSet<String> = json_lines(&audit).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
        seen == orders && in_queue(&moto, &url["orders"]) == (0, 0)
    });
    stop(child, &dir);
    let mut copies: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for a in json_lines(&audit) {
        assert!(a["message_id"].as_str().is_some_and(|m| !m.is_empty()), "{a}");
        assert_eq!(a["type"], "order", "{a}");
        copies.entry(a["id"].as_str().unwrap().to_string()).or_default().push(a["receives"].as_i64().unwrap());
    }
    assert_eq!(copies.keys().cloned().collect::<BTreeSet<_>>(), orders, "every order audited");
    // Exactly once, unless moto itself handed a message out twice (it loses concurrent deletes
    // and races concurrent receives: see `every_message_is_delivered_and_deleted` in sqs.rs),
    // and then its receive counter says so: k copies of a message take k receives.
    for (id, receives) in &copies {
        let most = *receives.iter().max().unwrap();
        assert!(most >= receives.len() as i64, "{id} audited {} times, received {most} times", receives.len());
    }
    let again = copies.values().filter(|r| r.len() > 1).count();
    eprintln!("commerce sqs: {} orders, {again} handed out twice by moto", orders.len());
    check_rejected(&rejected);
}
