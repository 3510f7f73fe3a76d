//! The `sqs` sink: SendMessageBatch in tens, `concurrency` requests at a time.
//!
//! `write` checks every event (body size, UTF-8, FIFO group id present) and sends the ones that
//! pass; the call returns once SQS has answered for all of them. Events that fail — refused by
//! the checks or by SQS for their content (a sender fault: never retryable), or not taken for
//! a transient reason (throttling, an internal error, a request that failed as a whole:
//! retryable) — come back as one [`WriteError::Partial`], so the engine dead-letters the first
//! kind and writes the second again on its own after a backoff; every other event of the batch
//! is in the queue, and none is sent twice by the sink.

use super::client::{QueueConfig, describe};
use crate::connectors::{BoxFuture, ConnectorError, ItemFailure, PartialFailure, Sink, WriteError};
use crate::exec::batch::SinkBatch;
use crate::observability::readiness::Throttled;
use crate::options::Options;
use arrow::array::{Array, AsArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::StreamExt;
use std::time::Duration;

/// Most entries in one SendMessageBatch.
const SQS_BATCH: usize = 10;

/// One event on its way to the queue.
#[derive(Debug, Clone)]
struct Entry {
    /// Its position in the batch being written.
    row: usize,
    body: String,
    group: Option<String>,
    dedup: Option<String>,
}

/// An entry SQS did not take.
#[derive(Debug)]
struct Refused {
    entry: Entry,
    permanent: bool,
    error: String,
}

pub struct SqsSink {
    queue: QueueConfig,
    client: Option<Client>,
    concurrency: usize,
    max_message_size: usize,
}

impl std::fmt::Debug for SqsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSink").field("queue", &self.queue.queue_url).finish_non_exhaustive()
    }
}

impl SqsSink {
    pub fn new(options: &Options) -> Result<SqsSink, ConnectorError> {
        let queue = QueueConfig::new(options)?;
        let concurrency = options.positive("concurrency").map_err(|e| ConnectorError::new(e.to_string()))?;
        let max_message_size = options
            .size("max_message_size")
            .and_then(|s| usize::try_from(s).ok())
            .filter(|s| (1..=1 << 20).contains(s))
            .ok_or_else(|| ConnectorError::new("option `max_message_size` must be between 1 byte and 1MiB"))?;
        Ok(SqsSink { queue, client: None, concurrency, max_message_size })
    }

    /// Built on first use: loading the AWS configuration is asynchronous.
    async fn client(&mut self) -> Client {
        match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = self.queue.client(Duration::from_secs(30)).await;
                self.client = Some(c.clone());
                c
            }
        }
    }

    /// Send `entries` in tens, `concurrency` requests at a time; what SQS did not take.
    async fn send(&mut self, entries: Vec<Entry>) -> Vec<Refused> {
        let client = self.client().await;
        let url = self.queue.queue_url.clone();
        let chunks: Vec<Vec<Entry>> = entries.chunks(SQS_BATCH).map(<[Entry]>::to_vec).collect();
        futures::stream::iter(chunks)
            .map(|chunk| send_batch(&client, &url, chunk))
            .buffered(self.concurrency)
            .collect::<Vec<Vec<Refused>>>()
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

async fn send_batch(client: &Client, url: &str, chunk: Vec<Entry>) -> Vec<Refused> {
    let mut request = client.send_message_batch().queue_url(url);
    for (i, e) in chunk.iter().enumerate() {
        let entry = SendMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .message_body(&e.body)
            .set_message_group_id(e.group.clone())
            .set_message_deduplication_id(e.dedup.clone())
            .build();
        match entry {
            Ok(entry) => request = request.entries(entry),
            Err(err) => {
                return chunk
                    .into_iter()
                    .map(|entry| Refused { entry, permanent: true, error: err.to_string() })
                    .collect();
            }
        }
    }
    match request.send().await {
        Ok(out) => {
            // Only an entry SQS lists as successful is in the queue; one it does not mention
            // at all is sent again rather than assumed delivered.
            let mut refused: Vec<Option<Refused>> = chunk
                .iter()
                .map(|entry| {
                    Some(Refused {
                        entry: entry.clone(),
                        permanent: false,
                        error: "SQS did not report on this entry".into(),
                    })
                })
                .collect();
            for ok in &out.successful {
                if let Some(r) = ok.id.parse::<usize>().ok().and_then(|i| refused.get_mut(i)) {
                    *r = None;
                }
            }
            for f in out.failed {
                if let Some(Some(r)) = f.id.parse::<usize>().ok().and_then(|i| refused.get_mut(i)) {
                    r.permanent = f.sender_fault;
                    r.error = format!("{}: {}", f.code, f.message.unwrap_or_default());
                }
            }
            refused.into_iter().flatten().collect()
        }
        Err(e) => {
            let error = describe(&e);
            chunk.into_iter().map(|entry| Refused { entry, permanent: false, error: error.clone() }).collect()
        }
    }
}

/// A per-event option as strings (expressions may come back as views or dictionaries).
fn strings(batch: &SinkBatch, name: &str) -> Result<Option<StringArray>, WriteError> {
    let Some(a) = batch.field(name) else { return Ok(None) };
    let a = if a.data_type() == &DataType::Utf8 {
        a.clone()
    } else {
        cast(a, &DataType::Utf8).map_err(|e| WriteError::Fatal(format!("`{name}`: {e}")))?
    };
    Ok(Some(a.as_string::<i32>().clone()))
}

fn value(a: &Option<StringArray>, i: usize) -> Option<String> {
    a.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i).to_string())
}

impl Sink for SqsSink {
    /// Connected once SQS answered a GetQueueAttributes for the queue (or a send succeeded).
    fn connected(&self) -> Option<BoxFuture<'static, ()>> {
        let queue = self.queue.clone();
        Some(Box::pin(async move {
            let client = queue.client(Duration::from_secs(30)).await;
            let throttle = Throttled::default();
            loop {
                match client.get_queue_attributes().queue_url(&queue.queue_url).send().await {
                    Ok(_) => return,
                    Err(e) => {
                        if let Some(line) = throttle.line(format_args!(
                            "cannot reach SQS queue {}: {}; retrying",
                            queue.queue_url,
                            describe(&e)
                        )) {
                            tracing::warn!(queue = %queue.queue_url, "{line}");
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }

    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            let groups = strings(batch, "message_group_id")?;
            let dedups = strings(batch, "deduplication_id")?;
            let mut failed = Vec::new();
            let mut entries = Vec::with_capacity(batch.len());
            for i in 0..batch.len() {
                let refuse = |error: String| ItemFailure { index: i, retryable: false, error };
                let payload = batch.payloads.value(i);
                if payload.len() > self.max_message_size {
                    failed.push(refuse(format!(
                        "an event of {} bytes is larger than `max_message_size` ({} bytes)",
                        payload.len(),
                        self.max_message_size
                    )));
                    continue;
                }
                let Ok(body) = std::str::from_utf8(payload) else {
                    failed.push(refuse("the event is not UTF-8 text, which SQS requires".into()));
                    continue;
                };
                let group = value(&groups, i);
                if groups.is_some() && group.is_none() {
                    failed.push(refuse("the `message_group_id` expression is NULL for this event".into()));
                    continue;
                }
                entries.push(Entry { row: i, body: body.to_string(), group, dedup: value(&dedups, i) });
            }
            for r in self.send(entries).await {
                let error = if r.permanent { format!("SQS refused the event: {}", r.error) } else { r.error };
                failed.push(ItemFailure { index: r.entry.row, retryable: !r.permanent, error });
            }
            if failed.is_empty() {
                return Ok(());
            }
            failed.sort_by_key(|f| f.index);
            Err(WriteError::Partial(PartialFailure { items: failed }))
        })
    }

    // `flush` is the default: every event `write` accepted is already in the queue.
}
