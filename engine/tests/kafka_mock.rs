//! The `kafka` source and sink against librdkafka's in-process mock cluster: fast, and able to
//! inject faults (brokers down, request errors) that a real broker cannot be made to show on
//! demand. The same behaviour against a real broker is in `kafka.rs`.

mod support;

use phoenix_engine::connectors::{BoxFuture, Sink, WriteError};
use phoenix_engine::exec::batch::SinkBatch;
use phoenix_engine::run::RunConfig;
use rdkafka::mocking::MockCluster;
use std::collections::BTreeSet;
use std::time::Duration;
use support::kafka::{committed, ids, produce, read_topic};
use support::{eventually, json_lines, lines, start, temp};

const LIMIT: Duration = Duration::from_secs(60);

fn config(brokers: &str) -> RunConfig {
    let mut c = RunConfig::new(2);
    c.settings.env.insert("BROKERS".into(), brokers.to_string());
    c
}

fn events(n: i64, partitions: i32) -> Vec<(Option<String>, Vec<u8>, Option<i32>)> {
    (0..n)
        .map(|i| {
            let kind = ["a", "b", "c"][i as usize % 3];
            (
                Some(kind.to_string()),
                format!(r#"{{"id":{i},"kind":"{kind}"}}"#).into_bytes(),
                Some(i as i32 % partitions),
            )
        })
        .collect()
}

fn write_input(dir: &std::path::Path, n: i64) -> std::path::PathBuf {
    let p = dir.join("in.jsonl");
    let text: String =
        (0..n).map(|i| format!("{{\"id\":{i},\"kind\":\"{}\"}}\n", ["a", "b", "c"][i as usize % 3])).collect();
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_writes_keys_headers_and_topic_per_event() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    for t in ["a-events", "b-events", "c-events"] {
        cluster.create_topic(t, 2, 1).unwrap();
    }
    let dir = temp("kafka-mock-sink");
    let input = write_input(&dir, 300);
    let flow = format!(
        r#"schema E {{ id: int, kind: string }}
source f = file {{ path = "{}" }} as E
sink k = kafka {{ brokers = env("BROKERS"), topic = kind || '-events', key = kind, headers = '{{"origin": "phoenix", "n": 1}}' }}
f | k
"#,
        input.display()
    );
    let run = start(&flow, config(&brokers));
    run.join().await.unwrap();
    for kind in ["a", "b", "c"] {
        let got = read_topic(&brokers, &format!("{kind}-events"), 2, 100, LIMIT);
        assert_eq!(got.len(), 100, "{kind}");
        assert!(got.iter().all(|m| m.key.as_deref() == Some(kind)));
        assert!(got.iter().all(|m| m.headers.get("origin").map(String::as_str) == Some("phoenix")));
        assert!(got.iter().all(|m| m.headers.get("n").map(String::as_str) == Some("1")));
        let mut want: Vec<i64> = (0..300).filter(|i| ["a", "b", "c"][*i as usize % 3] == kind).collect();
        let mut have = ids(got.iter().map(|m| m.payload.as_str()));
        want.sort();
        have.sort();
        assert_eq!(have, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_reads_every_partition_exposes_metadata_and_commits() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("events", 3, 1).unwrap();
    produce(&brokers, "events", &events(900, 3));
    let dir = temp("kafka-mock-source");
    let out = dir.join("out.jsonl");
    let flow = format!(
        r#"schema E {{ id: int, kind: string }}
source k = kafka {{ brokers = env("BROKERS"), topic = "events", group = "g1", batch_size = 64, commit_interval = 100ms }} as E
sink out = file {{ path = "{}" }}
k | select id, @key as key, @topic as topic, @partition as partition, @offset as offset, @timestamp as ts | out
"#,
        out.display()
    );
    let run = start(&flow, config(&brokers));
    eventually("900 events", LIMIT, || lines(&out).len() >= 900).await;
    run.stop().await.unwrap();
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 900);
    let got: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(got, (0..900).collect());
    for r in &rows {
        let id = r["id"].as_i64().unwrap();
        assert_eq!(r["partition"].as_i64().unwrap(), id % 3, "{r}");
        assert_eq!(r["offset"].as_i64().unwrap(), id / 3, "{r}");
        assert_eq!(r["topic"], "events");
        assert_eq!(r["key"].as_str().unwrap(), ["a", "b", "c"][id as usize % 3]);
        assert!(r["ts"].as_str().is_some_and(|t| t.starts_with("20")), "{r}");
    }
    assert_eq!(committed(&brokers, "g1", "events", 3), vec![Some(300); 3], "everything acknowledged is committed");

    // A restart of the same group reads nothing again.
    std::fs::remove_file(&out).unwrap();
    produce(&brokers, "events", &events(3, 3));
    let run = start(&flow, config(&brokers));
    eventually("the 3 new events", LIMIT, || lines(&out).len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.stop().await.unwrap();
    assert_eq!(lines(&out).len(), 3, "only the new events");
    assert_eq!(committed(&brokers, "g1", "events", 3), vec![Some(301); 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_errors_without_stalling_the_partition() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("events", 1, 1).unwrap();
    let mut msgs = events(200, 1);
    msgs.insert(50, (None, b"not json at all".to_vec(), Some(0)));
    msgs.insert(120, (None, br#"{"id": "not a number"}"#.to_vec(), Some(0)));
    produce(&brokers, "events", &msgs);
    let dir = temp("kafka-mock-poison");
    let (out, dead) = (dir.join("out.jsonl"), dir.join("dead.jsonl"));
    let flow = format!(
        r#"schema E {{ id: int, kind: string }}
source k = kafka {{ brokers = env("BROKERS"), topic = "events", group = "g", commit_interval = 100ms }} as E
sink out = file {{ path = "{}" }}
sink dead = file {{ path = "{}" }}
k | out
k.errors | dead
"#,
        out.display(),
        dead.display()
    );
    let run = start(&flow, config(&brokers));
    eventually("every event", LIMIT, || lines(&out).len() >= 200 && lines(&dead).len() >= 2).await;
    run.stop().await.unwrap();
    let dead = json_lines(&dead);
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["payload"], "not json at all");
    assert!(dead[0]["error"].as_str().unwrap().starts_with("invalid JSON at byte 0: "), "{}", dead[0]);
    let got: BTreeSet<i64> = ids(lines(&out).iter().map(String::as_str)).into_iter().collect();
    assert_eq!(got, (0..200).collect());
    assert_eq!(committed(&brokers, "g", "events", 1), vec![Some(202)], "poison offsets are committed too");
}

/// Fails every batch that holds the event with id 50, as a sink that refuses it would.
struct Refuses50;

impl Sink for Refuses50 {
    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            let has50 = (0..batch.len()).any(|i| batch.payloads.value(i).starts_with(br#"{"id":50,"#));
            if has50 { Err(WriteError::Fatal("refused".into())) } else { Ok(()) }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_events_stop_the_source_and_are_not_committed() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("events", 1, 1).unwrap();
    produce(&brokers, "events", &events(200, 1));
    let flow = r#"schema E { id: int, kind: string }
source k = kafka { brokers = env("BROKERS"), topic = "events", group = "g", batch_size = 10, commit_interval = 50ms } as E
sink out = stdout
k | out
"#;
    let mut cfg = config(&brokers);
    cfg.sinks.insert("out".into(), Box::new(Refuses50));
    let run = start(flow, cfg);
    let err = run.join().await.expect_err("the source stops");
    let msg = err.to_string();
    assert!(msg.contains("were not delivered") && msg.contains("refused"), "{msg}");
    let c = committed(&brokers, "g", "events", 1)[0];
    assert!(c.is_none_or(|o| o <= 50), "nothing at or after the failed batch is committed: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_rides_out_a_broker_outage() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("out", 1, 1).unwrap();
    cluster.create_topic("in", 1, 1).unwrap();
    let dir = temp("kafka-mock-outage");
    let input = write_input(&dir, 200);
    // The broker goes away before anything is written, for longer than `delivery_timeout`: the
    // producer's own retries give up, the sink's retry policy re-sends.
    cluster.broker_down(1).unwrap();
    let flow = format!(
        r#"schema E {{ id: int, kind: string }}
source f = file {{ path = "{}" }} as E
sink k = kafka {{ brokers = env("BROKERS"), topic = "out", delivery_timeout = 1s, backoff_min = 200ms, backoff_max = 1s, max_attempts = 0 }}
f | k
"#,
        input.display()
    );
    let run = start(&flow, config(&brokers));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(run.written("k"), 0, "nothing acknowledged while the broker is down");
    assert!(!run.handle.is_finished());
    cluster.broker_up(1).unwrap();
    run.join().await.unwrap();
    let got = read_topic(&brokers, "out", 1, 200, LIMIT);
    let unique: BTreeSet<i64> = ids(got.iter().map(|m| m.payload.as_str())).into_iter().collect();
    assert_eq!(unique, (0..200).collect(), "every event delivered after the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_catches_up_after_a_broker_outage() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("events", 2, 1).unwrap();
    produce(&brokers, "events", &events(100, 2));
    let dir = temp("kafka-mock-source-outage");
    let out = dir.join("out.jsonl");
    let flow = format!(
        r#"schema E {{ id: int, kind: string }}
source k = kafka {{ brokers = env("BROKERS"), topic = "events", group = "g", commit_interval = 100ms }} as E
sink out = file {{ path = "{}" }}
k | out
"#,
        out.display()
    );
    let run = start(&flow, config(&brokers));
    eventually("the first 100", LIMIT, || lines(&out).len() >= 100).await;
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.broker_up(1).unwrap();
    let more: Vec<_> = events(200, 2).into_iter().skip(100).collect();
    produce(&brokers, "events", &more);
    eventually("all 200", LIMIT, || lines(&out).len() >= 200).await;
    run.stop().await.unwrap();
    let got: BTreeSet<i64> = ids(lines(&out).iter().map(String::as_str)).into_iter().collect();
    assert_eq!(got, (0..200).collect());
    assert_eq!(committed(&brokers, "g", "events", 2), vec![Some(100); 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_events_go_to_the_sinks_errors() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("out", 1, 1).unwrap();
    let dir = temp("kafka-mock-large");
    let input = dir.join("in.jsonl");
    let big = "x".repeat(5000);
    std::fs::write(
        &input,
        format!("{{\"id\":1,\"kind\":\"a\"}}\n{{\"id\":2,\"kind\":\"{big}\"}}\n{{\"id\":3,\"kind\":\"b\"}}\n"),
    )
    .unwrap();
    let dead = dir.join("dead.jsonl");
    // All three in one batch: only the oversized one is refused, its neighbours are delivered.
    let flow = format!(
        r#"schema E {{ id: int, kind: string }}
source f = file {{ path = "{}" }} as E
sink k = kafka {{ brokers = env("BROKERS"), topic = "out", max_message_size = 4KiB }}
sink dead = file {{ path = "{}" }}
f | k
k.errors | dead
"#,
        input.display(),
        dead.display()
    );
    let run = start(&flow, config(&brokers));
    run.join().await.unwrap();
    let dead = json_lines(&dead);
    assert_eq!(dead.len(), 1);
    assert!(dead[0]["error"].as_str().unwrap().contains("max_message_size"), "{}", dead[0]);
    assert!(dead[0]["payload"].as_str().unwrap().starts_with(r#"{"id":2,"#), "{}", dead[0]);
    let got = read_topic(&brokers, "out", 1, 2, LIMIT);
    assert_eq!(ids(got.iter().map(|m| m.payload.as_str())), vec![1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_commits_what_is_acknowledged_and_loses_nothing() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("events", 4, 1).unwrap();
    let dir = temp("kafka-mock-rebalance");
    let (out1, out2) = (dir.join("one.jsonl"), dir.join("two.jsonl"));
    let flow = |out: &std::path::Path| {
        format!(
            r#"schema E {{ id: int, kind: string }}
source k = kafka {{ brokers = env("BROKERS"), topic = "events", group = "shared", batch_size = 50, commit_interval = 100ms }} as E
sink out = file {{ path = "{}" }}
k | out
"#,
            out.display()
        )
    };
    // Events keep arriving while a second member joins and the partitions are split.
    let producer = {
        let brokers = brokers.clone();
        std::thread::spawn(move || {
            for chunk in events(2000, 4).chunks(50) {
                produce(&brokers, "events", chunk);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let one = start(&flow(&out1), config(&brokers));
    eventually("the first member reading", LIMIT, || !lines(&out1).is_empty()).await;
    let two = start(&flow(&out2), config(&brokers));
    eventually("the second member reading", LIMIT, || !lines(&out2).is_empty()).await;
    producer.join().unwrap();
    let seen = || ids(lines(&out1).iter().chain(lines(&out2).iter()).map(String::as_str));
    eventually("every event", LIMIT, || seen().into_iter().collect::<BTreeSet<i64>>().len() >= 2000).await;
    // The first member leaves: the second takes over its partitions. Whatever the first could
    // not commit (the mock refuses commits while the group rebalances) the second reads again
    // and commits, so every partition ends committed to its end before the second stops.
    one.stop().await.unwrap();
    eventually("the second member committing every partition to its end", LIMIT, || {
        committed(&brokers, "shared", "events", 4) == vec![Some(500); 4]
    })
    .await;
    two.stop().await.unwrap();
    let seen = seen();
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique, (0..2000).collect(), "nothing lost");
    // Duplicates are the events read after the last commit the group accepted before the
    // rebalance (the mock refuses commits while a member is joining); they are reported, and
    // bounded by what was read in that window.
    eprintln!("rebalance: {} events read for 2000 produced ({} duplicates)", seen.len(), seen.len() - 2000);
    let c = committed(&brokers, "shared", "events", 4);
    assert_eq!(c, vec![Some(500); 4], "every partition committed to its end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_refusals_dead_letter_only_the_refused_events() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("out", 1, 1).unwrap();
    // The broker refuses the first produce request for good: the events in it go to `.errors`
    // with the broker's reason, every other event of the same flush is delivered, none twice.
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);
    let dir = temp("kafka-mock-refused");
    let input = write_input(&dir, 300);
    let dead = dir.join("dead.jsonl");
    let flow = format!(
        r#"schema E {{ id: int, kind: string }}
source f = file {{ path = "{}", batch_size = 100 }} as E
sink k = kafka {{ brokers = env("BROKERS"), topic = "out", properties = ["linger.ms=50", "batch.num.messages=40"] }}
sink dead = file {{ path = "{}" }}
f | k
k.errors | dead
"#,
        input.display(),
        dead.display()
    );
    let run = start(&flow, config(&brokers));
    run.join().await.unwrap();
    let dead = json_lines(&dead);
    assert!(!dead.is_empty() && dead.len() < 300, "some events refused, not all: {}", dead.len());
    for d in &dead {
        assert!(d["error"].as_str().unwrap().contains("Kafka refused"), "{d}");
    }
    let refused: Vec<i64> = ids(dead.iter().map(|d| d["payload"].as_str().unwrap()));
    let got = read_topic(&brokers, "out", 1, 300 - refused.len(), LIMIT);
    let delivered = ids(got.iter().map(|m| m.payload.as_str()));
    assert_eq!(delivered.len() + refused.len(), 300, "each event exactly once: delivered or refused");
    let all: BTreeSet<i64> = delivered.iter().chain(&refused).copied().collect();
    assert_eq!(all, (0..300).collect());
}

/// `/ready` of a `phoenix run` process.
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = write!(s, "GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// How long a crashed replica's partitions stay unread. Two `phoenix run` processes share a
/// group on the mock cluster, which (like a Kafka broker, unlike tansu 0.6) drops a member whose
/// session expired and rebalances; one is killed with SIGKILL (no LeaveGroup), and the time
/// until the other holds every partition is measured: the session timeout, then the mock's
/// rebalance (measured: 19 s = 10 s until the member is dropped + 9 s for the mock to finish
/// the join round, where a Kafka broker finishes it once the survivor has rejoined, within a
/// heartbeat; with `PHOENIX_SESSION_MS=45000`, 89 s = 45 s + 44 s). With Phoenix's default `session.timeout.ms` of 10 s it must be under 25 s;
/// `PHOENIX_SESSION_MS=45000` measures librdkafka's default by hand (printed, not asserted).
#[test]
fn a_killed_replicas_partitions_move_within_the_session_timeout() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 4, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = temp("kafka-mock-crash");
    let session = std::env::var("PHOENIX_SESSION_MS").ok();
    let properties = session
        .as_deref()
        .map(|ms| format!(", properties = [\"session.timeout.ms={ms}\", \"heartbeat.interval.ms=3000\"]"))
        .unwrap_or_default();
    let start = |name: &str| {
        let flow = dir.join(format!("{name}.phx"));
        std::fs::write(
            &flow,
            format!(
                "schema E {{ id: int }}\nsource k = kafka {{ brokers = \"{brokers}\", topic = \"events\", group = \"crash\"{properties} }} as E\n\
                 sink out = file {{ path = \"{}\" }}\nk | out\n",
                dir.join(format!("{name}.jsonl")).display()
            ),
        )
        .unwrap();
        let port = support::free_port();
        let log = dir.join(format!("{name}.log"));
        let child = support::phoenix()
            .args(["run", flow.to_str().unwrap(), "--no-progress", "--metrics-address", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (support::Guard::new(child), port, log)
    };
    let (one, one_port, _) = start("one");
    let (two, two_port, two_log) = start("two");
    let wait_for = |what: &str, limit: Duration, f: &dyn Fn() -> bool| {
        let t = std::time::Instant::now();
        while !f() {
            assert!(
                t.elapsed() < limit,
                "timed out waiting for {what}:\n{}",
                std::fs::read_to_string(&two_log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("both members to have partitions", LIMIT, &|| ready(one_port) && ready(two_port));
    let assignments =
        || std::fs::read_to_string(&two_log).unwrap().lines().filter(|l| l.contains("partitions assigned")).count();
    wait_for("the group to settle with two members", LIMIT, &|| {
        std::fs::read_to_string(&two_log)
            .unwrap()
            .lines()
            .rev()
            .find(|l| l.contains("partitions assigned"))
            .is_some_and(|l| l.matches("events/").count() < 4)
    });
    let before = assignments();
    let mut one = one.take();
    one.kill().unwrap();
    let killed = std::time::Instant::now();
    one.wait().unwrap();
    wait_for("the survivor to hold every partition", Duration::from_secs(120), &|| {
        assignments() > before
            && std::fs::read_to_string(&two_log)
                .unwrap()
                .lines()
                .rev()
                .find(|l| l.contains("partitions assigned"))
                .is_some_and(|l| l.matches("events/").count() == 4)
    });
    let unread = killed.elapsed();
    eprintln!(
        "a SIGKILLed member's partitions were unread for {unread:.1?} (session.timeout.ms {})",
        session.as_deref().unwrap_or("10000, Phoenix's default")
    );
    if session.is_none() {
        assert!(unread < Duration::from_secs(25), "unread for {unread:?} with a 10 s session");
    }
    drop(two);
}
