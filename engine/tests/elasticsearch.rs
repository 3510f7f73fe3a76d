//! The `elasticsearch` sink end to end: real flows on the real engine, the official client, and
//! the in-process `_bulk` server (`connectors::elasticsearch::test_server`) on 127.0.0.1 with
//! injected failures. Nothing here asserts on wall-clock time.

use phoenix_engine::EngineCatalog;
use phoenix_engine::connectors::elasticsearch::test_server::{self, ItemFault, RequestFault, TestServer};
use phoenix_engine::connectors::{BoxFuture, ConnectorError, Source, SourceContext};
use phoenix_engine::exec::ack::Ack;
use phoenix_engine::exec::batch::RawBatchBuilder;
use phoenix_engine::observability::metrics::{Metrics, NodeStats};
use phoenix_engine::run::{RunConfig, RunError, SINK_QUEUE, run};
use phoenix_engine::taskgraph::{TaskGraph, node_labels, raw_queue};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("phoenix-es-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Logs of this test binary, to check what the engine says (one global subscriber).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("warn")
            .with_writer(move || LogWriter(w.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A flow compiled from files on disk, ready to run.
struct Flow {
    graph: TaskGraph,
    metrics: Arc<Metrics>,
}

fn compile(path: &Path) -> Flow {
    let catalog = EngineCatalog::new();
    let c = phoenix_dsl::compile(path.to_str().unwrap(), &phoenix_engine::FsLoader, &catalog);
    assert!(!c.has_errors(), "{}", c.render(false));
    let plan = c.plan(&catalog).expect("plans");
    let metrics = Arc::new(Metrics::new(node_labels(&plan, &c.sources)));
    let graph = TaskGraph::build(&plan, &c.sources, &metrics).expect("task graph");
    Flow { graph, metrics }
}

fn write_flow(dir: &Path, text: &str) -> Flow {
    let path = dir.join("flow.phx");
    std::fs::write(&path, text).unwrap();
    compile(&path)
}

fn node(metrics: &Metrics, title: &str) -> Arc<NodeStats> {
    metrics
        .nodes
        .iter()
        .find(|n| n.title == title)
        .unwrap_or_else(|| panic!("no node {title}: {:?}", metrics.nodes.iter().map(|n| &n.title).collect::<Vec<_>>()))
        .clone()
}

fn start(flow: Flow, config: RunConfig) -> tokio::task::JoinHandle<Result<(), RunError>> {
    let catalog = EngineCatalog::new();
    tokio::spawn(async move { run(flow.graph, &catalog, flow.metrics, config).await })
}

fn dead_letters(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("dead letter {l:?}: {e}")))
        .collect()
}

/// The event a dead letter carries.
fn dead_event(d: &Value) -> Value {
    serde_json::from_str(d["payload"].as_str().expect("payload is text")).expect("payload is the event's JSON")
}

/// Poll until `f` holds; a generous limit only guards against hanging forever.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 100,000 events with ids; the server throttles items (429, retried alone until they pass),
/// fails them temporarily (500) or for good (503 every time: exhausted after `max_attempts`),
/// refuses some (400 mapping errors), rejects whole requests (429, 503) and answers some too
/// late (the client times out although the documents are in, and sends them again). Each event
/// ends up indexed exactly once or dead-lettered once with its reason and attempt count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_events_indexed_once_or_dead_lettered() {
    const N: u64 = 100_000;
    let dir = temp("100k");
    let input = dir.join("events.jsonl");
    let mut text = String::with_capacity(N as usize * 70);
    for i in 0..N {
        text += &format!("{{\"id\":\"e-{i}\",\"kind\":\"k{}\",\"n\":{i},\"bad\":{}}}\n", i % 3, i.is_multiple_of(97));
    }
    std::fs::write(&input, text).unwrap();
    let stop = CancellationToken::new();
    let es = test_server::spawn(stop.clone().cancelled_owned()).await.unwrap();
    es.set_item_faults(|item| {
        let n = item.source["n"].as_u64().unwrap_or(0);
        if item.source["bad"] == Value::Bool(true) {
            Some(ItemFault::Mapping("failed to parse field [bad] of type [long]".into()))
        } else if n % 1000 == 7 {
            Some(ItemFault::Unavailable)
        } else if n % 10 == 3 && item.seen < 2 {
            Some(ItemFault::Rejected)
        } else if n % 10 == 4 && item.seen == 0 {
            Some(ItemFault::Internal)
        } else {
            None
        }
    });
    es.set_request_faults(|n| match n {
        5 | 20 | 45 => Some(RequestFault::Status(429)),
        10 | 30 => Some(RequestFault::Status(503)),
        15 | 40 => Some(RequestFault::Slow(Duration::from_millis(1500))),
        _ => None,
    });
    let flow = write_flow(
        &dir,
        &format!(
            r#"schema E {{ id: string, kind: string, n: int, bad: bool }}
source input = file {{ path = "{input}", format = ndjson, batch_size = 2000 }} as E
sink search = elasticsearch {{
  url = "{url}", index = kind || '-index', id = id,
  bulk_max_events = 1000, linger = 5ms, timeout = 500ms,
  max_attempts = 5, backoff_min = 1ms, backoff_max = 10ms,
}}
sink dead = file {{ path = "{dead}" }}
input | search
search.errors | dead
"#,
            input = input.display(),
            url = es.url(),
            dead = dir.join("dead.jsonl").display()
        ),
    );
    let metrics = flow.metrics.clone();
    start(flow, RunConfig::new(2)).await.unwrap().expect("flow runs");

    let dead = dead_letters(&dir.join("dead.jsonl"));
    let mut dead_ids = HashSet::new();
    let mut first_try = 0;
    for d in &dead {
        let event = dead_event(d);
        let n = event["n"].as_u64().unwrap();
        assert!(dead_ids.insert(n), "dead-lettered twice: {d}");
        assert!(d["node"].as_str().unwrap().contains("search"), "{d}");
        let error = d["error"].as_str().unwrap();
        if n.is_multiple_of(97) {
            assert!(error.contains("400 mapper_parsing_exception: failed to parse field [bad]"), "{d}");
            // Refused items are not retried; an earlier attempt may have been in a request that
            // failed as a whole.
            if d["attempts"] == 1 {
                first_try += 1;
            }
        } else {
            assert_eq!(n % 1000, 7, "only refused or exhausted events are dead letters: {d}");
            // The last error: the item's own, or its request's.
            assert!(
                error.contains("503 unavailable_shards_exception") || error.starts_with("bulk request failed"),
                "{d}"
            );
            assert_eq!(d["attempts"], 5, "exhausted after max_attempts: {d}");
        }
    }
    let refused = (0..N).filter(|n| n.is_multiple_of(97)).count();
    assert!(
        first_try * 10 >= refused * 9,
        "refused items are dead-lettered on their first try: {first_try} of {refused}"
    );
    let mut indexed = 0;
    let mut reindexed = 0;
    for k in 0..3 {
        let docs = es.documents(&format!("k{k}-index"));
        reindexed += docs.values().filter(|d| d.version > 1).count();
        for (id, doc) in &docs {
            let n: u64 = id.strip_prefix("e-").unwrap().parse().unwrap();
            assert_eq!(n % 3, k, "{id} in the wrong index");
            assert!(!dead_ids.contains(&n), "{id} both indexed and dead-lettered");
            let source: Value = serde_json::from_slice(&doc.source).unwrap();
            assert_eq!(source["id"], id.as_str(), "the document is the event as it arrived");
        }
        indexed += docs.len() as u64;
    }
    for n in 0..N {
        let expect_dead = n.is_multiple_of(97) || n % 1000 == 7;
        assert_eq!(dead_ids.contains(&n), expect_dead, "event {n}");
        if !expect_dead {
            assert!(es.get(&format!("k{}-index", n % 3), &format!("e-{n}")).is_some(), "event {n} lost");
        }
    }
    assert_eq!(indexed + dead.len() as u64, N, "every event indexed or dead-lettered, none twice");
    // The answers that came too late: their documents were in, were sent again, and the `_id`
    // made the second write replace the first instead of adding a copy.
    assert!(reindexed > 0, "timed-out requests were sent again");
    let sink = node(&metrics, "sink search (elasticsearch)");
    assert_eq!(sink.events_in.get(), N);
    assert_eq!(sink.events_out.get(), indexed);
    assert_eq!(sink.errors.get(), dead.len() as u64);
    let stats = es.stats();
    assert!(stats.request_errors >= 5 && stats.item_errors > 10_000, "faults were injected: {stats:?}");
    assert!(stats.items > N + 10_000, "failed items were sent again: {stats:?}");
    stop.cancel();
    std::fs::remove_dir_all(&dir).ok();
}

/// Without `id`, Elasticsearch makes one per document, so a retried item must be only the one
/// that failed: a resent batch would index its successful items twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ids_only_failed_items_are_sent_again() {
    const N: u64 = 20_000;
    let dir = temp("noid");
    let input = dir.join("events.jsonl");
    let text: String = (0..N).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let stop = CancellationToken::new();
    let es = test_server::spawn(stop.clone().cancelled_owned()).await.unwrap();
    es.set_item_faults(|item| {
        let n = item.source["n"].as_u64().unwrap_or(0);
        if n.is_multiple_of(501) {
            Some(ItemFault::Mapping("failed to parse".into()))
        } else if n.is_multiple_of(7) && item.seen == 0 {
            Some(ItemFault::Rejected)
        } else {
            None
        }
    });
    let flow = write_flow(
        &dir,
        &format!(
            r#"schema E {{ n: int }}
source input = file {{ path = "{input}", batch_size = 700 }} as E
sink search = elasticsearch {{ url = "{url}", index = "plain-index", bulk_max_events = 600, linger = 2ms, backoff_min = 1ms, backoff_max = 5ms }}
sink dead = file {{ path = "{dead}" }}
input | search
search.errors | dead
"#,
            input = input.display(),
            url = es.url(),
            dead = dir.join("dead.jsonl").display()
        ),
    );
    start(flow, RunConfig::new(1)).await.unwrap().expect("flow runs");
    let mut seen = HashMap::new();
    for doc in es.documents("plain-index").values() {
        let v: Value = serde_json::from_slice(&doc.source).unwrap();
        *seen.entry(v["n"].as_u64().unwrap()).or_insert(0) += 1;
    }
    let dead: HashSet<u64> =
        dead_letters(&dir.join("dead.jsonl")).iter().map(|d| dead_event(d)["n"].as_u64().unwrap()).collect();
    for n in 0..N {
        let times = seen.get(&n).copied().unwrap_or(0);
        if n.is_multiple_of(501) {
            assert!(times == 0 && dead.contains(&n), "event {n}: indexed {times}x, dead {}", dead.contains(&n));
        } else {
            assert_eq!(times, 1, "event {n} indexed {times} times");
        }
    }
    assert_eq!(es.count("plain-index") + dead.len(), N as usize);
    stop.cancel();
    std::fs::remove_dir_all(&dir).ok();
}

/// The cluster is down: the sink retries, the bounded queues fill, and the source stops
/// reading: how much it has read is bounded by the queue sizes, not the input. Back up, every
/// event is indexed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_then_back_catches_up_with_bounded_memory() {
    const N: usize = 60_000;
    const BATCH: usize = 100;
    const BULK: usize = 500;
    const WORKERS: usize = 2;
    let dir = temp("down");
    let input = dir.join("events.jsonl");
    let text: String = (0..N).map(|i| format!("{{\"id\":\"d-{i}\",\"n\":{i}}}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let stop = CancellationToken::new();
    let es = test_server::spawn(stop.clone().cancelled_owned()).await.unwrap();
    es.set_down(true);
    let flow = write_flow(
        &dir,
        &format!(
            r#"schema E {{ id: string, n: int }}
source input = file {{ path = "{input}", batch_size = {BATCH} }} as E
sink search = elasticsearch {{
  url = "{url}", index = "down-index", id = id, bulk_max_events = {BULK}, linger = 1ms,
  max_attempts = 0, backoff_min = 5ms, backoff_max = 50ms,
}}
input | search
"#,
            input = input.display(),
            url = es.url(),
        ),
    );
    let metrics = flow.metrics.clone();
    let source = node(&metrics, "source input (file)");
    let sink = node(&metrics, "sink search (elasticsearch)");
    let task = start(flow, RunConfig::new(WORKERS));
    // Wait until the source is held back: the server refused connections for a while and the
    // count of events read has not moved since.
    let mut last = (0, Instant::now());
    eventually("the source to be held back", || {
        let read = source.events_in.get();
        if read != last.0 {
            last = (read, Instant::now());
        }
        es.stats().resets > 10 && sink.retries.get() > 10 && last.1.elapsed() > Duration::from_secs(1)
    })
    .await;
    // Everything that can be in flight: the sink's group (plus the rest of a split batch), its
    // queue, one batch per worker, the raw queue, and the batch the source is sending.
    let bound = BULK + BATCH * (1 + SINK_QUEUE + WORKERS + raw_queue(WORKERS) + 1);
    let read = source.events_in.get() as usize;
    assert!(read <= bound, "read {read} events while the sink was down; bounded queues hold at most {bound}");
    assert!(read < N / 10, "the source must not read the input while the sink is down ({read} of {N})");
    assert_eq!(sink.events_out.get(), 0);
    assert_eq!(es.stats().items, 0, "nothing reached the server while it was down");

    es.set_down(false);
    task.await.unwrap().expect("flow runs");
    assert_eq!(es.count("down-index"), N, "caught up");
    assert_eq!(sink.events_out.get(), N as u64);
    assert!(es.documents("down-index").values().all(|d| d.version == 1), "nothing was indexed twice");
    stop.cancel();
    std::fs::remove_dir_all(&dir).ok();
}

/// A source whose batches carry real acknowledgements; counts those that resolved.
struct AckedSource {
    events: Vec<Vec<u8>>,
    per_batch: usize,
    resolved: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl Source for AckedSource {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(async move {
            for chunk in self.events.chunks(self.per_batch) {
                let mut b = RawBatchBuilder::default();
                chunk.iter().for_each(|e| b.push(e));
                let (ack, waiter) = Ack::new();
                let (resolved, failed) = (self.resolved.clone(), self.failed.clone());
                tokio::spawn(async move {
                    if waiter.wait().await.is_err() {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    resolved.fetch_add(1, Ordering::SeqCst);
                });
                if ctx.send(b.finish(Vec::new(), ack)).await.is_err() {
                    break;
                }
            }
            Ok(())
        })
    }
}

/// Retries exhausted and `.errors` not wired: the sink keeps the events and keeps trying, says
/// so loudly, and acknowledges nothing; once the cluster takes them, all are indexed and
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_without_errors_port_holds_and_says_so() {
    let logs = logs();
    let dir = temp("exhausted");
    let stop = CancellationToken::new();
    let es = test_server::spawn(stop.clone().cancelled_owned()).await.unwrap();
    es.set_item_faults(|_| Some(ItemFault::Unavailable));
    let flow = write_flow(
        &dir,
        &format!(
            r#"schema E {{ id: string }}
source input = generate {{ count = 1 }} as E
sink search = elasticsearch {{ url = "{url}", index = "held-index", id = id, max_attempts = 3, backoff_min = 1ms, backoff_max = 20ms }}
input | search
"#,
            url = es.url()
        ),
    );
    let metrics = flow.metrics.clone();
    let (resolved, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let events: Vec<Vec<u8>> = (0..50).map(|i| format!("{{\"id\":\"h-{i}\"}}").into_bytes()).collect();
    let mut config = RunConfig::new(1);
    config.sources.insert(
        "input".into(),
        Box::new(AckedSource { events, per_batch: 10, resolved: resolved.clone(), failed: failed.clone() }),
    );
    let task = start(flow, config);
    let said = |logs: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&logs.lock().unwrap())
            .contains("retries exhausted and `.errors` is not wired: holding the events and retrying")
    };
    eventually("the loud log", || said(&logs)).await;
    let sink = node(&metrics, "sink search (elasticsearch)");
    eventually("more retries after exhaustion", || sink.retries.get() > 6).await;
    assert_eq!(resolved.load(Ordering::SeqCst), 0, "nothing is acknowledged while the events are held");
    assert_eq!(sink.errors.get(), 0, "nothing was given up");
    assert_eq!(sink.unhandled.get(), 0, "nothing was dropped");
    assert_eq!(es.count("held-index"), 0);

    es.clear_faults();
    task.await.unwrap().expect("flow runs");
    assert_eq!(es.count("held-index"), 50, "all held events were indexed in the end");
    eventually("the acknowledgements", || resolved.load(Ordering::SeqCst) == 5).await;
    assert_eq!(failed.load(Ordering::SeqCst), 0, "every batch acknowledged as delivered");
    stop.cancel();
    std::fs::remove_dir_all(&dir).ok();
}

/// Basic auth and API keys reach the cluster as `Authorization` headers; a wrong key is a
/// retryable whole-request failure that dead-letters after the retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_sent() {
    let dir = temp("auth");
    let stop = CancellationToken::new();
    let es = test_server::spawn(stop.clone().cancelled_owned()).await.unwrap();
    let input = dir.join("in.jsonl");
    std::fs::write(&input, "{\"id\":\"a\"}\n{\"id\":\"b\"}\n").unwrap();
    let flow = |auth: &str, index: &str| {
        format!(
            r#"schema E {{ id: string }}
source input = file {{ path = "{input}" }} as E
sink search = elasticsearch {{ url = "{url}", index = "{index}", id = id, {auth}, max_attempts = 2, backoff_min = 1ms }}
sink dead = file {{ path = "{dead}" }}
input | search
search.errors | dead
"#,
            input = input.display(),
            url = es.url(),
            dead = dir.join("dead.jsonl").display()
        )
    };
    // base64("elastic:s3cret")
    es.require_authorization(Some("Basic ZWxhc3RpYzpzM2NyZXQ=".into()));
    let f = write_flow(&dir, &flow(r#"username = "elastic", password = env("ES_TEST_PASSWORD")"#, "basic-index"));
    let mut config = RunConfig::new(1);
    config.settings.env.insert("ES_TEST_PASSWORD".into(), "s3cret".into());
    start(f, config).await.unwrap().expect("flow runs");
    assert_eq!(es.count("basic-index"), 2);

    es.require_authorization(Some("ApiKey a2V5LWlkOmtleQ==".into()));
    let f = write_flow(&dir, &flow(r#"api_key = "a2V5LWlkOmtleQ==""#, "key-index"));
    start(f, RunConfig::new(1)).await.unwrap().expect("flow runs");
    assert_eq!(es.count("key-index"), 2);

    let f = write_flow(&dir, &flow(r#"api_key = "d3Jvbmc=""#, "wrong-index"));
    start(f, RunConfig::new(1)).await.unwrap().expect("flow runs");
    assert_eq!(es.count("wrong-index"), 0);
    let dead = dead_letters(&dir.join("dead.jsonl"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead.iter().all(|d| d["error"].as_str().unwrap().contains("401 security_exception") && d["attempts"] == 2));
    stop.cancel();
    std::fs::remove_dir_all(&dir).ok();
}

/// One HTTP/1.1 POST of NDJSON; returns (status, body).
fn post(port: u16, path: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// The commerce scenario (`examples/commerce-search.phx`): products, orders and suppliers over
/// HTTP and from batch files are validated and indexed into `products-index`, `orders-index`
/// and `suppliers-index`; invalid events are rejected, undecodable ones and a document the
/// cluster refuses are dead-lettered with their errors. An HTTP request is answered only once
/// its events are indexed.
#[test]
fn commerce_scenario_end_to_end() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = temp("commerce");
    let incoming = dir.join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    std::fs::write(
        incoming.join("catalog.json"),
        r#"[
  {"id": "p-1", "type": "product", "ts": "2026-03-01T10:00:00Z", "sku": "A-1", "name": "Anvil", "price": 49.5, "stock": 3},
  {"id": "p-2", "type": "product", "ts": "2026-03-01T10:00:00Z", "sku": "B-2", "name": "BROKEN", "price": 1.0},
  {"id": "s-1", "type": "supplier", "ts": "2026-03-01T10:00:00Z", "company": "Acme", "country": "DE", "tags": ["tools"]}
]"#,
    )
    .unwrap();
    std::fs::write(
        incoming.join("orders.json"),
        "{\"id\": \"o-1\", \"type\": \"order\", \"ts\": \"2026-03-01T11:00:00Z\", \"amount\": 100, \"customer\": {\"id\": \"c-1\", \"tier\": \"gold\"}}\n\
         {\"id\": \"o-2\", \"type\": \"order\", \"ts\": \"2026-03-01T11:00:00Z\", \"amount\": -3}\n",
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let stop_es = CancellationToken::new();
    let es: TestServer = rt.block_on(test_server::spawn(stop_es.clone().cancelled_owned())).unwrap();
    // The cluster's mapping refuses one product; another is throttled once.
    es.set_item_faults(|item| match item.id {
        Some("p-2") => Some(ItemFault::Mapping("failed to parse field [name]: BROKEN is not allowed".into())),
        Some("p-3") if item.seen == 0 => Some(ItemFault::Rejected),
        _ => None,
    });
    let flow = compile(&root.join("examples/commerce-search.phx"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = RunConfig::new(2);
    let env = [
        ("ES_URL", es.url()),
        ("HTTP_ADDRESS", format!("127.0.0.1:{port}")),
        ("BATCH_FILES", format!("{}/*.json", incoming.display())),
        ("REJECTED_FILE", dir.join("rejected.jsonl").display().to_string()),
        ("PHOENIX_DEAD_LETTERS", dir.join("dead.jsonl").display().to_string()),
    ];
    config.settings.env.extend(env.into_iter().map(|(k, v)| (k.to_string(), v)));
    // Bulk requests wait at most 200ms (the flow's linger); retries start at 200ms.
    let shutdown = config.shutdown.clone();
    let metrics = flow.metrics.clone();
    let task = rt.spawn(async move { run(flow.graph, &EngineCatalog::new(), flow.metrics, config).await });

    let events = [
        r#"{"id": "p-3", "type": "product", "ts": "2026-03-01T12:00:00Z", "sku": "C-3", "name": "Crate", "price": 9.99}"#,
        r#"{"id": "o-3", "type": "order", "ts": "2026-03-01T12:00:00Z", "amount": 10, "vat_rate": 0.07, "coupon": "SPRING"}"#,
        r#"{"id": "s-2", "type": "supplier", "ts": "2026-03-01T12:00:00Z", "company": "Bolt AG", "country": "AT"}"#,
        r#"{"id": "x-1", "type": "invoice", "ts": "2026-03-01T12:00:00Z"}"#,
        r#"{not json"#,
    ];
    let body = events.join("\n") + "\n";
    let start = Instant::now();
    let answer = loop {
        match post(port, "/events", body.as_bytes()) {
            Some(a) => break a,
            None => {
                assert!(start.elapsed() < Duration::from_secs(60), "the HTTP source never listened");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(answer.0, 200, "{answer:?}");
    // Answered only after indexing: the HTTP events are in, including the throttled p-3.
    for (index, id) in [("products-index", "p-3"), ("orders-index", "o-3"), ("suppliers-index", "s-2")] {
        assert!(es.get(index, id).is_some(), "{id} was acknowledged before it was indexed");
    }
    rt.block_on(eventually("the batch files to be indexed", || {
        es.count("products-index") == 2 && es.count("orders-index") == 2 && es.count("suppliers-index") == 2
    }));
    shutdown.cancel();
    rt.block_on(task).unwrap().expect("flow runs");

    let mut indices = es.indices();
    indices.sort();
    assert_eq!(indices, ["orders-index", "products-index", "suppliers-index"]);
    let o1 = es.get("orders-index", "o-1").unwrap();
    assert_eq!((o1["gross"].as_f64(), o1["channel"].as_str()), (Some(119.0), Some("file")));
    assert_eq!(o1["customer"]["tier"], "gold", "nested fields arrive intact");
    let o3 = es.get("orders-index", "o-3").unwrap();
    assert_eq!((o3["gross"].as_f64(), o3["coupon"].as_str()), (Some(10.7), Some("SPRING")));
    assert_eq!(
        es.get("products-index", "p-1").unwrap()["origin"].as_str().map(|o| o.ends_with("catalog.json:1")),
        Some(true)
    );
    assert_eq!(es.get("suppliers-index", "s-1").unwrap()["tags"], serde_json::json!(["tools"]));
    assert_eq!(es.get("products-index", "p-3").unwrap()["channel"], "http");

    let rejected: Vec<Value> = dead_letters(&dir.join("rejected.jsonl"));
    let mut reasons: Vec<(String, String)> = rejected
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["reason"].as_str().unwrap().to_string()))
        .collect();
    reasons.sort();
    assert_eq!(reasons, [("o-2".to_string(), "amount < 0".to_string()), ("x-1".to_string(), "bad type".to_string())]);
    let dead = dead_letters(&dir.join("dead.jsonl"));
    assert_eq!(dead.len(), 2, "{dead:#?}");
    let broken = dead.iter().find(|d| d["payload"].as_str().unwrap().contains("BROKEN")).expect("p-2 dead-lettered");
    assert!(broken["error"].as_str().unwrap().contains("400 mapper_parsing_exception"), "{broken}");
    assert!(broken["node"].as_str().unwrap().contains("search"), "{broken}");
    assert_eq!(broken["attempts"], 1);
    assert!(dead.iter().any(|d| d["payload"] == "{not json"), "{dead:#?}");
    let sink = node(&metrics, "sink search (elasticsearch)");
    assert_eq!((sink.events_in.get(), sink.events_out.get(), sink.errors.get()), (7, 6, 1));
    stop_es.cancel();
    std::fs::remove_dir_all(&dir).ok();
}
