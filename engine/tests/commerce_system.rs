//! The whole commerce system end to end, deployed as it would be: the `phoenix` binary runs
//! `examples/commerce-ingest.phx` and `examples/commerce-index.phx` unchanged, against real
//! servers on 127.0.0.1 (tansu for Kafka, moto_server for S3) and the in-process `_bulk` server
//! for Elasticsearch. Events are POSTed with the real `curl`, export files uploaded with boto3,
//! and every output is read back by an independent client (confluent-kafka, boto3, the ES test
//! server's own store). Every check compares exact id sets: an event lost, duplicated, misrouted
//! or written where it does not belong fails the test.
//!
//! `cargo test -p phoenix-engine --test commerce_system`

mod support;

use phoenix_engine::connectors::elasticsearch::test_server::{self, ItemFault, TestServer};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::servers::{AWS_ENV, Moto, Tansu, python_client};
use support::{Guard, curl, free_port, json_lines, lines, phoenix_run, signal, temp, until, wait};
use tokio_util::sync::CancellationToken;

const TOPICS: [&str; 3] = ["products", "orders", "suppliers"];

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

fn py(args: &[&str], stdin: Option<&[u8]>) -> String {
    python_client(args, stdin, AWS_ENV)
}

fn topic_of(kind: &str) -> &'static str {
    match kind {
        "product" => "products",
        "order" => "orders",
        "supplier" => "suppliers",
        other => panic!("no topic for {other}"),
    }
}

/// A valid event of `kind` numbered `n`, as JSON (with its `type` when it goes over HTTP).
fn event(id: &str, kind: &str, n: usize, with_type: bool) -> Value {
    let mut v = json!({"id": id, "ts": format!("2026-12-05T10:{:02}:00Z", n % 60)});
    match kind {
        "product" => v["price"] = json!(n as f64 + 0.5),
        "order" => v["amount"] = json!(n as f64 * 10.0),
        _ => v["country"] = json!("DE"),
    }
    if with_type {
        v["type"] = json!(kind);
    }
    v
}

/// What was sent and where each part of it must end up.
#[derive(Default)]
struct Expected {
    /// Valid events: id → type. Each must be in its topic, its index and the archive once.
    valid: BTreeMap<String, String>,
    /// Invalid events: id → reason, each in the rejected file once.
    rejected: BTreeMap<String, String>,
}

impl Expected {
    fn valid(&mut self, id: &str, kind: &str) {
        assert!(self.valid.insert(id.into(), kind.into()).is_none(), "{id} twice in the test data");
    }
    fn ids_of(&self, kind: &str) -> BTreeSet<String> {
        self.valid.iter().filter(|(_, k)| *k == kind).map(|(id, _)| id.clone()).collect()
    }
}

/// The malformed line of the NDJSON request (cut off mid-object).
const MALFORMED: &str = r#"{"id":"bad-h1","type":"order","ts":"2026-12-05T10:00:00Z""#;
/// An order without its required `ts`.
const MISSING_TS: &str = r#"{"id":"m-h1","type":"order","amount":5}"#;
/// The document the cluster's mapping refuses: written to Kafka and the archive, dead-lettered
/// by the index flow.
const REFUSED: &str = "p-refused";
/// A document the cluster throttles (429) the first time: retried, indexed once.
const THROTTLED: &str = "o-h1";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

/// Objects of a bucket: key → bytes (gunzipped), read with boto3.
fn objects(m: &Moto, bucket: &str, prefix: &str) -> BTreeMap<String, String> {
    py(&["s3-cat", &m.endpoint(), bucket, prefix], None)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["key"].as_str().unwrap().to_string(), v["body"].as_str().unwrap().to_string())
        })
        .collect()
}

fn keys(m: &Moto, bucket: &str, prefix: &str) -> BTreeSet<String> {
    py(&["s3-list", &m.endpoint(), bucket, prefix], None)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["key"].as_str().unwrap().to_string())
        .collect()
}

/// Every message of a topic (from the beginning until nothing arrives for 3 s).
fn read_topic(t: &Tansu, topic: &str) -> Vec<Value> {
    python_client(&["kafka-read", &t.brokers(), topic, "1", "1000000", "120", "3"], None, &[])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One `phoenix run` of an example; its log goes to `log` in `dir`.
fn run(flow: &str, log: &str, dir: &Path, env: &[(&str, String)], sets: &[&str]) -> Guard {
    let mut c = phoenix_run(&example(flow), &dir.join(log));
    for s in sets {
        c.args(["--set", s]);
    }
    c.envs(AWS_ENV.iter().copied())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(dir)
        .spawn()
        .map(Guard::new)
        .unwrap()
}

/// SIGTERM drains and exits 0.
fn stop(child: Guard, dir: &Path, log: &str) {
    signal(child.child(), "-TERM");
    let out = wait(child.take(), Duration::from_secs(90));
    let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
    assert!(out.status.success(), "phoenix exited with {:?}; {log}:\n{text}", out.status);
}

/// The id in a dead letter's payload (the raw event as read or as it would have been written).
fn payload_id(d: &Value) -> Option<String> {
    let payload = d["payload"].as_str()?;
    serde_json::from_str::<Value>(payload).ok()?["id"].as_str().map(String::from)
}

#[test]
fn the_commerce_system_end_to_end() {
    let tansu = Tansu::start();
    let moto = Moto::start();
    let dir = temp("commerce-system");
    for t in TOPICS {
        tansu.create_topic(t, 1);
    }
    py(&["s3-bucket", &moto.endpoint(), "incoming"], None);
    py(&["s3-bucket", &moto.endpoint(), "archive"], None);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop_es = CancellationToken::new();
    let es: TestServer = rt.block_on(test_server::spawn(stop_es.clone().cancelled_owned())).unwrap();
    es.set_item_faults(|item| match item.id {
        Some(REFUSED) => Some(ItemFault::Mapping("failed to parse field [price]: REFUSED".into())),
        Some(THROTTLED) if item.seen == 0 => Some(ItemFault::Rejected),
        _ => None,
    });

    let addr = format!("127.0.0.1:{}", free_port());
    let env = |dead: &str| -> Vec<(&str, String)> {
        vec![
            ("KAFKA_BROKERS", tansu.brokers()),
            ("S3_ENDPOINT", moto.endpoint()),
            ("HTTP_ADDRESS", addr.clone()),
            ("BATCH_BUCKET", "incoming".into()),
            ("ARCHIVE_BUCKET", "archive".into()),
            ("ES_URL", es.url()),
            ("REJECTED_FILE", dir.join("rejected.jsonl").display().to_string()),
            ("PHOENIX_DEAD_LETTERS", dir.join(dead).display().to_string()),
        ]
    };
    // Shorter waits than in production, so the test does not sit idle: the bucket is listed
    // every second and archive objects close after a second.
    // `until` shows the end of `phoenix.log` when a wait times out: the ingest flow's log.
    let ingest =
        run("commerce-ingest.phx", "phoenix.log", &dir, &env("ingest-dead.jsonl"), &["batch.poll_interval=1s"]);
    let index = run("commerce-index.phx", "index.log", &dir, &env("index-dead.jsonl"), &["archive.max_age=1s"]);
    until(&dir, "the http source listening", Duration::from_secs(60), || TcpStream::connect(&addr).is_ok());

    let mut want = Expected::default();

    // ---- HTTP 1: NDJSON with every kind of valid event, three invalid ones, a malformed line
    // and an event missing a required field.
    let mut body: Vec<String> = Vec::new();
    for (i, kind) in ["product", "order", "supplier"].iter().cycle().take(15).enumerate() {
        let id = format!("{}-h{i}", &kind[..1]);
        body.push(event(&id, kind, i, true).to_string());
        want.valid(&id, kind);
    }
    body.insert(3, r#"{"id":" ","type":"order","ts":"2026-12-05T10:00:00Z","amount":1}"#.into());
    body.insert(6, r#"{"id":"x-h1","type":"invoice","ts":"2026-12-05T10:00:00Z"}"#.into());
    body.insert(9, r#"{"id":"o-hneg","type":"order","ts":"2026-12-05T10:00:00Z","amount":-1}"#.into());
    body.insert(12, MALFORMED.into());
    body.insert(14, MISSING_TS.into());
    want.rejected
        .extend([(" ", "empty id"), ("x-h1", "bad type"), ("o-hneg", "amount < 0")].map(|(a, b)| (a.into(), b.into())));
    let text = body.join("\n") + "\n";
    let (status, answer) = curl(&addr, "POST", "/events", Some("application/x-ndjson"), Some(text.as_bytes()));
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(18), Some(2)), "{answer}");
    let failed: Vec<u64> = answer["errors"].as_array().unwrap().iter().map(|e| e["index"].as_u64().unwrap()).collect();
    assert_eq!(failed, [12, 14], "{answer}");
    // A 200 means the valid events are in Kafka already.
    for topic in TOPICS {
        let got: BTreeSet<String> =
            read_topic(&tansu, topic).iter().map(|m| m["key"].as_str().unwrap().into()).collect();
        let kind = &topic[..topic.len() - 1];
        assert_eq!(got, want.ids_of(kind), "{topic} after the first 200");
    }

    // ---- HTTP 2: a JSON array, with the product Elasticsearch will refuse.
    let second: Vec<Value> = vec![event("o-h100", "order", 100, true), event(REFUSED, "product", 101, true)];
    want.valid("o-h100", "order");
    want.valid(REFUSED, "product");
    let text = serde_json::to_string_pretty(&second).unwrap();
    let (status, answer) = curl(&addr, "POST", "/events", Some("application/json"), Some(text.as_bytes()));
    assert_eq!((status, answer.as_str()), (200, r#"{"accepted":2,"rejected":0,"errors":[]}"#));

    // ---- Export files, uploaded with boto3 while the flows run.
    let put = |key: &str, data: &[u8]| {
        py(&["s3-put", &moto.endpoint(), "incoming", key], Some(data));
    };
    // Products: a JSON array without `type`s; item 7 misses its `ts`, item 9 has a negative price.
    let mut products: Vec<Value> = (0..20).map(|i| event(&format!("p-f{i}"), "product", i, false)).collect();
    products[6].as_object_mut().unwrap().remove("ts");
    products[8]["price"] = json!(-2.0);
    for (i, p) in products.iter().enumerate() {
        let id = p["id"].as_str().unwrap();
        match i {
            6 => {}
            8 => {
                want.rejected.insert(id.into(), "amount < 0".into());
            }
            _ => want.valid(id, "product"),
        }
    }
    put("incoming/products-2026-12-05.json", serde_json::to_string_pretty(&products).unwrap().as_bytes());
    // Orders: NDJSON with a line that is not JSON (line 11), a negative amount and an empty id.
    let orders: Vec<Value> = (0..30).map(|i| event(&format!("o-f{i}"), "order", i, false)).collect();
    let mut text: Vec<String> = orders.iter().map(|o| o.to_string()).collect();
    orders.iter().for_each(|o| want.valid(o["id"].as_str().unwrap(), "order"));
    text.insert(10, "this line is not JSON".into());
    text.push(r#"{"id":"o-fneg","ts":"2026-12-05T11:00:00Z","amount":-1}"#.into());
    text.push(r#"{"id":"","ts":"2026-12-05T11:00:00Z","amount":1}"#.into());
    want.rejected.extend([("o-fneg", "amount < 0"), ("", "empty id")].map(|(a, b)| (a.into(), b.into())));
    put("incoming/orders-2026-12-05.jsonl", (text.join("\n") + "\n").as_bytes());
    // Suppliers: gzip NDJSON.
    let suppliers: Vec<Value> = (0..10).map(|i| event(&format!("s-f{i}"), "supplier", i, false)).collect();
    suppliers.iter().for_each(|s| want.valid(s["id"].as_str().unwrap(), "supplier"));
    put("incoming/suppliers-2026-12-05.json.gz", &gzip(ndjson(&suppliers).as_bytes()));
    // A file named after no entity: its records are rejected.
    let invoices: Vec<Value> = (0..2).map(|i| event(&format!("x-f{i}"), "supplier", i, false)).collect();
    invoices.iter().for_each(|x| {
        want.rejected.insert(x["id"].as_str().unwrap().into(), "bad type".into());
    });
    put("incoming/invoices-2026-12-05.json", ndjson(&invoices).as_bytes());
    // A bad file: not JSON at all. And a file outside the glob, which nobody reads.
    put("incoming/products-2026-12-06.json", b"id,sku,price\np-csv,A-1,3.5\n");
    put("incoming/README.txt", ndjson(&[event("p-txt", "product", 1, true)]).as_bytes());

    // ---- Wait until every output holds as many events as it should, then stop both flows and
    // compare exact sets.
    let in_es = |kind: &str| es.count(&format!("{kind}s-index"));
    let archived = || -> usize { objects(&moto, "archive", "").values().map(|b| b.lines().count()).sum() };
    until(&dir, "every event indexed, archived, rejected or dead-lettered", Duration::from_secs(180), || {
        in_es("product") == want.ids_of("product").len() - 1
            && in_es("order") == want.ids_of("order").len()
            && in_es("supplier") == want.ids_of("supplier").len()
            && lines(&dir.join("rejected.jsonl")).len() >= want.rejected.len()
            && lines(&dir.join("ingest-dead.jsonl")).len() >= 5
            && !lines(&dir.join("index-dead.jsonl")).is_empty()
            && keys(&moto, "incoming", "processed/").len() == 4
            && archived() >= want.valid.len()
    });
    stop(ingest, &dir, "phoenix.log");
    stop(index, &dir, "index.log");

    // Kafka: each valid event once, in its type's topic, keyed by its id; nothing else.
    let topics: BTreeMap<String, i64> =
        serde_json::from_str(python_client(&["kafka-topics", &tansu.brokers()], None, &[]).trim()).unwrap();
    assert_eq!(topics.keys().map(String::as_str).collect::<BTreeSet<_>>(), TOPICS.into(), "no other topic");
    for topic in TOPICS {
        let mut seen = BTreeSet::new();
        for m in read_topic(&tansu, topic) {
            let v: Value = serde_json::from_str(m["value"].as_str().unwrap()).unwrap();
            let id = v["id"].as_str().unwrap().to_string();
            assert_eq!(m["key"].as_str(), Some(id.as_str()), "key = id: {m}");
            assert_eq!(topic_of(v["type"].as_str().unwrap()), topic, "{v}");
            if topic == "orders" {
                let gross = (v["amount"].as_f64().unwrap() * 1.19 * 100.0).round() / 100.0;
                assert!(v["gross"].as_f64().is_some_and(|g| (g - gross).abs() < 1e-9), "{v}");
            }
            assert!(seen.insert(id.clone()), "{id} twice in {topic}");
        }
        assert_eq!(seen, want.ids_of(&topic[..topic.len() - 1]), "{topic} holds exactly its events");
    }

    // Elasticsearch: each valid event indexed once (version 1) in its type's index, except the
    // one the mapping refuses; no other index.
    let mut indices = es.indices();
    indices.sort();
    assert_eq!(indices, ["orders-index", "products-index", "suppliers-index"]);
    for kind in ["product", "order", "supplier"] {
        let docs = es.documents(&format!("{kind}s-index"));
        let mut ids = want.ids_of(kind);
        ids.remove(REFUSED);
        assert_eq!(docs.keys().cloned().collect::<BTreeSet<_>>(), ids, "{kind}s-index holds exactly its events");
        for (id, doc) in &docs {
            assert_eq!(doc.version, 1, "{id} indexed {} times", doc.version);
            let v: Value = serde_json::from_slice(&doc.source).unwrap();
            assert_eq!((v["id"].as_str(), v["type"].as_str()), (Some(id.as_str()), Some(kind)), "{v}");
        }
    }
    let p = es.get("products-index", "p-f0").unwrap();
    assert_eq!(
        (p["channel"].as_str(), p["origin"].as_str()),
        (Some("file"), Some("incoming/products-2026-12-05.json:1")),
        "{p}"
    );
    assert_eq!(es.get("orders-index", THROTTLED).unwrap()["channel"], "http");
    // Two item errors: the refusal (not retried) and the throttled order's first attempt.
    assert_eq!(es.stats().item_errors, 2, "{:?}", es.stats());

    // The archive: every valid event once, under its type's prefix and day, gzip NDJSON;
    // the refused product too (it was accepted; only Elasticsearch would not take it).
    let mut archived: BTreeMap<String, String> = BTreeMap::new();
    for (key, body) in objects(&moto, "archive", "") {
        assert!(key.ends_with(".jsonl.gz"), "{key}");
        for line in body.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let (id, kind) = (v["id"].as_str().unwrap().to_string(), v["type"].as_str().unwrap().to_string());
            assert!(key.starts_with(&format!("{kind}s/2026/12/05/")), "{id} ({kind}) archived under {key}");
            assert!(archived.insert(id.clone(), kind).is_none(), "{id} archived twice");
        }
    }
    assert_eq!(archived, want.valid, "the archive holds exactly the accepted events");

    // Rejected: every invalid event once, with its reason.
    let mut rejected = BTreeMap::new();
    for r in json_lines(&dir.join("rejected.jsonl")) {
        let id = r["id"].as_str().unwrap().to_string();
        assert!(
            rejected.insert(id.clone(), r["reason"].as_str().unwrap().to_string()).is_none(),
            "{id} rejected twice"
        );
    }
    assert_eq!(rejected, want.rejected, "rejected with reasons");

    // Dead letters of the ingest flow: what could not be decoded, with where and why.
    let dead = json_lines(&dir.join("ingest-dead.jsonl"));
    let find = |needle: &str| -> &Value {
        let found: Vec<&Value> = dead.iter().filter(|d| d["error"].as_str().unwrap().contains(needle)).collect();
        assert_eq!(found.len(), 1, "one dead letter with {needle:?}: {dead:#?}");
        found[0]
    };
    let malformed = dead.iter().find(|d| d["payload"] == MALFORMED).expect("the malformed line");
    assert!(malformed["error"].as_str().unwrap().contains("invalid JSON"), "{malformed}");
    let missing = dead.iter().find(|d| d["payload"] == MISSING_TS).expect("the event without ts");
    assert!(missing["error"].as_str().unwrap().contains("missing required field `ts`"), "{missing}");
    for d in [malformed, missing] {
        assert!(d["node"].as_str().unwrap().starts_with("source api"), "{d}");
    }
    let item7 = find("`s3://incoming/incoming/products-2026-12-05.json` item 7: ");
    assert!(item7["error"].as_str().unwrap().contains("missing required field `ts`"), "{item7}");
    assert_eq!(payload_id(item7).as_deref(), Some("p-f6"), "{item7}");
    let line11 = find("`s3://incoming/incoming/orders-2026-12-05.jsonl` line 11: ");
    assert_eq!(line11["payload"], "this line is not JSON", "{line11}");
    let csv = find("`s3://incoming/incoming/products-2026-12-06.json`");
    assert!(csv["error"].as_str().unwrap().contains("is not JSON"), "{csv}");
    for d in [item7, line11, csv] {
        assert!(d["node"].as_str().unwrap().starts_with("source batch"), "{d}");
    }
    assert_eq!(dead.len(), 5, "nothing else dead-lettered by the ingest flow: {dead:#?}");

    // Dead letters of the index flow: the refused document, with Elasticsearch's answer.
    let dead = json_lines(&dir.join("index-dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(payload_id(&dead[0]).as_deref(), Some(REFUSED), "{}", dead[0]);
    assert!(dead[0]["error"].as_str().unwrap().contains("400 mapper_parsing_exception"), "{}", dead[0]);
    assert!(dead[0]["node"].as_str().unwrap().contains("search"), "{}", dead[0]);

    // The export files: read ones moved under `processed/`; the bad one under `unreadable/`
    // for a person, the one outside the glob untouched.
    assert_eq!(
        keys(&moto, "incoming", "processed/"),
        [
            "invoices-2026-12-05.json",
            "orders-2026-12-05.jsonl",
            "products-2026-12-05.json",
            "suppliers-2026-12-05.json.gz"
        ]
        .map(|k| format!("processed/{k}"))
        .into()
    );
    assert_eq!(keys(&moto, "incoming", "unreadable/"), ["unreadable/products-2026-12-06.json".to_string()].into());
    assert_eq!(keys(&moto, "incoming", "incoming/"), ["incoming/README.txt".to_string()].into());
    stop_es.cancel();
}
