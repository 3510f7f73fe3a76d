//! The `sqs` sink: SendMessageBatch in tens, `concurrency` requests at a time.
//!
//! `write` checks a batch (body sizes, FIFO ids present) and sends it; entries SQS refuses for a
//! transient reason (throttling, an internal error, a request that failed as a whole) are kept.
//! `flush` sends the kept entries again and returns [`WriteError::Retryable`] while any still
//! fail, so the engine's backoff paces the retries and only failed entries are sent again. An
//! entry refused for its content (a sender fault) cannot succeed: `flush` returns
//! [`WriteError::Fatal`] and the engine dead-letters what the flush covered. Bodies larger than
//! `max_message_size` are refused in `write` before anything is sent, so that batch alone goes
//! to `.errors`. If the engine gives up on a flush (a `write` follows a failed flush), the kept
//! entries are forgotten: the engine dead-lettered them.

use super::client::{QueueConfig, describe};
use crate::connectors::{BoxFuture, ConnectorError, Sink, WriteError};
use crate::exec::batch::SinkBatch;
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
    /// Entries to send again on the next flush.
    failed: Vec<Refused>,
    /// The last flush failed: if `write` comes next, the engine gave up on those events.
    abandoned: bool,
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
        Ok(SqsSink { queue, client: None, concurrency, max_message_size, failed: Vec::new(), abandoned: false })
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
        Ok(out) => out
            .failed
            .into_iter()
            .filter_map(|f| {
                let entry = chunk.get(f.id.parse::<usize>().ok()?)?.clone();
                Some(Refused {
                    entry,
                    permanent: f.sender_fault,
                    error: format!("{}: {}", f.code, f.message.unwrap_or_default()),
                })
            })
            .collect(),
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
    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            if self.abandoned {
                self.failed.clear();
                self.abandoned = false;
            }
            let groups = strings(batch, "message_group_id")?;
            let dedups = strings(batch, "deduplication_id")?;
            let mut entries = Vec::with_capacity(batch.len());
            for i in 0..batch.len() {
                let payload = batch.payloads.value(i);
                if payload.len() > self.max_message_size {
                    return Err(WriteError::Fatal(format!(
                        "an event of {} bytes is larger than `max_message_size` ({} bytes)",
                        payload.len(),
                        self.max_message_size
                    )));
                }
                let body = std::str::from_utf8(payload)
                    .map_err(|_| WriteError::Fatal("an event is not UTF-8 text, which SQS requires".into()))?;
                let group = value(&groups, i);
                if groups.is_some() && group.is_none() {
                    return Err(WriteError::Fatal("the `message_group_id` expression is NULL for an event".into()));
                }
                entries.push(Entry { body: body.to_string(), group, dedup: value(&dedups, i) });
            }
            let refused = self.send(entries).await;
            self.failed.extend(refused);
            Ok(())
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(async move {
            if let Some(p) = self.failed.iter().find(|r| r.permanent) {
                self.abandoned = true;
                return Err(WriteError::Fatal(format!("SQS refused an event: {}", p.error)));
            }
            if self.failed.is_empty() {
                self.abandoned = false;
                return Ok(());
            }
            let again: Vec<Entry> = std::mem::take(&mut self.failed).into_iter().map(|r| r.entry).collect();
            self.failed = self.send(again).await;
            let Some(r) = self.failed.first() else {
                self.abandoned = false;
                return Ok(());
            };
            let message = format!("{} events not sent to SQS: {}", self.failed.len(), r.error);
            self.abandoned = true;
            if self.failed.iter().any(|r| r.permanent) {
                return Err(WriteError::Fatal(message));
            }
            Err(WriteError::Retryable(message))
        })
    }
}
