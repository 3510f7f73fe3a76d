//! Independent Kafka clients for tests: produce test data, read topics back, read committed
//! offsets. Plain rdkafka, none of Phoenix's connector code.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Produce `(key, payload)` messages to `topic` (partition chosen by key hash, or round robin
/// when `partition` is given per message) and wait until all are delivered.
pub fn produce(brokers: &str, topic: &str, messages: &[(Option<String>, Vec<u8>, Option<i32>)]) {
    let p: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "5").create().expect("test producer");
    for (key, payload, partition) in messages {
        let mut r = BaseRecord::<String, Vec<u8>>::to(topic).payload(payload);
        if let Some(k) = key {
            r = r.key(k);
        }
        if let Some(part) = partition {
            r = r.partition(*part);
        }
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).expect("test messages delivered");
}

/// A message as read back.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: String,
    pub headers: BTreeMap<String, String>,
}

/// Read every partition of `topic` from the beginning until `want` messages arrived or
/// `limit` passed (then return what there is).
pub fn read_topic(brokers: &str, topic: &str, partitions: i32, want: usize, limit: Duration) -> Vec<Read> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "phoenix-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("test consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < want && start.elapsed() < limit {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Read {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (x.key.to_string(), String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(e)) => eprintln!("test reader: {e}"),
            None => {}
        }
    }
    out
}

/// The offsets `group` committed for `topic`'s partitions (`None` where nothing is committed).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offset reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(30)).expect("committed offsets");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect()
}

/// `ids` of JSON events as found in payloads (`{"id": N, ...}`).
pub fn ids<'a>(payloads: impl IntoIterator<Item = &'a str>) -> Vec<i64> {
    payloads
        .into_iter()
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok()?.get("id")?.as_i64())
        .collect()
}
