//! The `sqs` source: competing consumers on one queue.
//!
//! `pollers` tasks each long-poll ReceiveMessage (10 messages, `wait_time`) and gather what they
//! receive into one batch (more short receives while the queue keeps giving full answers, up to
//! `batch_size` or `linger`). Each batch gets a task that owns its receipt handles:
//!
//! - while the flow works on the batch, it extends the messages' visibility every third of
//!   `visibility_timeout` (a late extension would let SQS hand them to another consumer);
//! - once the batch is acknowledged (written by every sink, filtered out or dead-lettered) it
//!   deletes the messages with DeleteMessageBatch, retrying failed entries; a receipt handle
//!   that cannot be deleted means the message comes back later (a duplicate, never a loss);
//! - if the events were not delivered, it sets their visibility to 0 so they are received again
//!   at once (SQS counts receives: a queue's redrive policy moves a message that keeps failing
//!   to its dead-letter queue).
//!
//! On shutdown the pollers stop receiving; the source waits up to `drain_timeout` for the
//! batches in flight to be acknowledged and deleted.

use super::client::{QueueConfig, describe};
use crate::connectors::{BoxFuture, ConnectorError, Source, SourceContext};
use crate::exec::ack::{Ack, AckWaiter};
use crate::exec::batch::RawBatchBuilder;
use crate::observability::readiness::Throttled;
use crate::options::Options;
use arrow::array::{ArrayRef, Int64Array, StringArray};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Most messages one ReceiveMessage returns, and most entries of one batch request.
const SQS_BATCH: usize = 10;
/// Attempts at deleting (or releasing) one batch's messages before leaving them to time out.
const DELETE_ATTEMPTS: u32 = 8;

#[derive(Debug)]
pub struct SqsSource {
    queue: QueueConfig,
    pollers: usize,
    wait_time: Duration,
    visibility: Duration,
    drain_timeout: Duration,
}

impl SqsSource {
    pub fn new(options: &Options) -> Result<SqsSource, ConnectorError> {
        let queue = QueueConfig::new(options)?;
        let pollers = options.positive("pollers").map_err(|e| ConnectorError::new(e.to_string()))?;
        let wait_time = options.duration("wait_time").unwrap_or(Duration::from_secs(20));
        if wait_time > Duration::from_secs(20) {
            return Err(ConnectorError::new("option `wait_time` is at most 20s (the SQS limit)"));
        }
        let visibility = options.duration("visibility_timeout").unwrap_or(Duration::from_secs(30));
        if !(Duration::from_secs(2)..=Duration::from_secs(12 * 3600)).contains(&visibility) {
            return Err(ConnectorError::new("option `visibility_timeout` must be between 2s and 12h"));
        }
        let drain_timeout = options.duration("drain_timeout").unwrap_or(Duration::from_secs(30));
        Ok(SqsSource { queue, pollers, wait_time, visibility, drain_timeout })
    }
}

/// What every poller shares (and the `s3` source, for its notification queue).
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) client: Client,
    pub(crate) queue_url: String,
    pub(crate) wait_time: Duration,
    pub(crate) visibility: Duration,
    /// Failed receives, logged at most once per 30 s whatever the number of pollers.
    pub(crate) throttle: Throttled,
}

impl Source for SqsSource {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(async move {
            // A receive may wait `wait_time` on the server before it answers.
            let client = self.queue.client(self.wait_time + Duration::from_secs(10)).await;
            let shared = Arc::new(Shared {
                name: ctx.name.clone(),
                client,
                queue_url: self.queue.queue_url.clone(),
                wait_time: self.wait_time,
                visibility: self.visibility,
                throttle: Throttled::default(),
            });
            info!(source = %ctx.name, queue = %shared.queue_url, pollers = self.pollers, "receiving");
            let ctx = Arc::new(ctx);
            let mut pollers = JoinSet::new();
            let mut acks = JoinSet::new();
            let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<InFlight>();
            for _ in 0..self.pollers {
                pollers.spawn(poll(shared.clone(), ctx.clone(), ack_tx.clone()));
            }
            drop(ack_tx);
            // Start a settle task for every batch the pollers hand over, until they are done.
            loop {
                tokio::select! {
                    Some(f) = ack_rx.recv() => { acks.spawn(settle(shared.clone(), f)); }
                    Some(_) = acks.join_next(), if !acks.is_empty() => {}
                    done = pollers.join_next() => match done {
                        Some(_) => {}
                        None => break,
                    },
                }
            }
            while let Ok(f) = ack_rx.try_recv() {
                acks.spawn(settle(shared.clone(), f));
            }
            // The flow may drain once no poller holds the context.
            drop(ctx);
            let deadline = Instant::now() + self.drain_timeout;
            while !acks.is_empty() {
                match tokio::time::timeout_at(deadline, acks.join_next()).await {
                    Ok(_) => {}
                    Err(_) => {
                        warn!(source = %shared.name, batches = acks.len(),
                            "stopping with unacknowledged messages; SQS delivers them again after their visibility timeout");
                        acks.abort_all();
                        break;
                    }
                }
            }
            Ok(())
        })
    }
}

/// A batch handed to the flow: its receipt handles and acknowledgement.
struct InFlight {
    handles: Vec<String>,
    waiter: AckWaiter,
}

/// One ReceiveMessage loop.
async fn poll(shared: Arc<Shared>, ctx: Arc<SourceContext>, settle: tokio::sync::mpsc::UnboundedSender<InFlight>) {
    let mut failures = 0u32;
    while !ctx.is_stopping() {
        let mut builder = RawBatchBuilder::default();
        let (mut ids, mut counts, mut handles) = (Vec::new(), Vec::new(), Vec::new());
        let started = Instant::now();
        let mut wait = shared.wait_time;
        loop {
            let receive = shared
                .client
                .receive_message()
                .queue_url(&shared.queue_url)
                .max_number_of_messages(SQS_BATCH as i32)
                .wait_time_seconds(wait.as_secs() as i32)
                .visibility_timeout(shared.visibility.as_secs() as i32)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                // No SDK retries: an attempt that timed out may have received messages, which
                // stay hidden for `visibility_timeout` and then come back. The loop below
                // retries and says so, where the SDK would retry silently.
                .customize()
                .config_override(aws_sdk_sqs::config::Builder::default().retry_config(RetryConfig::disabled()))
                .send();
            let received = tokio::select! {
                r = receive => r,
                // Messages received by an abandoned request stay invisible until their
                // visibility timeout, then come back: nothing is lost.
                _ = ctx.stopping() => break,
            };
            let messages = match received {
                Ok(out) => {
                    failures = 0;
                    ctx.set_connected();
                    out.messages.unwrap_or_default()
                }
                Err(e) => {
                    failures += 1;
                    let lost = if matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)) {
                        "; any messages it received come back after `visibility_timeout`, received again"
                    } else {
                        ""
                    };
                    if let Some(line) =
                        shared.throttle.line(format_args!("ReceiveMessage failed: {}{lost}; retrying", describe(&e)))
                    {
                        warn!(source = %shared.name, "{line}");
                    }
                    let pause = Duration::from_millis(100 * u64::from(failures.min(50)));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = ctx.stopping() => {}
                    }
                    break;
                }
            };
            let full = messages.len() == SQS_BATCH;
            for m in messages {
                push(&mut builder, &mut ids, &mut counts, &mut handles, m);
            }
            // Keep gathering (without waiting) while the queue has more and the batch has room.
            if !full || builder.len() + SQS_BATCH > ctx.batch_size || started.elapsed() >= ctx.linger {
                break;
            }
            wait = Duration::ZERO;
        }
        if builder.is_empty() {
            continue;
        }
        let (ack, waiter) = Ack::new();
        let meta: Vec<(&'static str, ArrayRef)> = vec![
            ("message_id", Arc::new(StringArray::from(ids))),
            ("receive_count", Arc::new(Int64Array::from(counts))),
        ];
        let batch = builder.finish(meta, ack);
        debug!(source = %shared.name, messages = handles.len(), "received");
        // The settle task is started before the batch goes out, so its visibility is looked
        // after however long the flow takes to take it.
        if settle.send(InFlight { handles, waiter }).is_err() {
            batch.ack.fail("the source stopped");
            return;
        }
        let ack = batch.ack.clone();
        if ctx.send(batch).await.is_err() {
            ack.fail("the flow stopped before the events were processed");
            return;
        }
    }
}

fn push(
    builder: &mut RawBatchBuilder,
    ids: &mut Vec<String>,
    counts: &mut Vec<Option<i64>>,
    handles: &mut Vec<String>,
    m: Message,
) {
    let Some(handle) = m.receipt_handle else { return };
    builder.push(m.body.as_deref().unwrap_or_default().as_bytes());
    ids.push(m.message_id.unwrap_or_default());
    counts.push(
        m.attributes
            .as_ref()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|c| c.parse().ok()),
    );
    handles.push(handle);
}

/// Look after one batch until it is settled: extend its visibility while in flight, then
/// delete it (delivered) or release it (not delivered).
async fn settle(shared: Arc<Shared>, f: InFlight) {
    let InFlight { handles, waiter } = f;
    let wait = waiter.wait();
    tokio::pin!(wait);
    let every = shared.visibility / 3;
    let outcome = loop {
        tokio::select! {
            r = &mut wait => break r,
            _ = tokio::time::sleep(every) => {
                // Slow batch: keep it invisible to other consumers for another full timeout.
                change_visibility(&shared, &handles, shared.visibility.as_secs() as i32).await;
            }
        }
    };
    match outcome {
        Ok(()) => delete(&shared, &handles).await,
        Err(reason) => {
            debug!(source = %shared.name, %reason, messages = handles.len(), "not delivered; releasing");
            change_visibility(&shared, &handles, 0).await;
        }
    }
}

/// Run a batch request over `handles` in tens, sending failed entries again.
async fn for_entries<F, Fut>(shared: &Shared, what: &str, handles: &[String], mut request: F) -> bool
where
    F: FnMut(Vec<(String, String)>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<(String, bool, String)>, String>>,
{
    let mut all_done = true;
    for chunk in handles.chunks(SQS_BATCH) {
        let mut left: Vec<(String, String)> =
            chunk.iter().enumerate().map(|(i, h)| (i.to_string(), h.clone())).collect();
        let mut attempt = 0;
        while !left.is_empty() {
            attempt += 1;
            let failed = match request(left.clone()).await {
                Ok(failed) => failed,
                Err(e) => left.iter().map(|(id, _)| (id.clone(), false, e.clone())).collect(),
            };
            // A sender fault (an expired or unknown receipt handle) does not heal by retrying.
            left.retain(|(id, _)| failed.iter().any(|(f, sender, _)| f == id && !sender));
            for (_, sender, e) in failed.iter().filter(|(_, sender, _)| *sender) {
                debug!(source = %shared.name, %e, sender, "{what}: entry refused");
            }
            if !failed.is_empty() && left.is_empty() {
                all_done = false;
            }
            if left.is_empty() {
                break;
            }
            if attempt >= DELETE_ATTEMPTS {
                warn!(source = %shared.name, messages = left.len(), error = %failed[0].2,
                    "{what} failed {attempt} times; the messages come back after their visibility timeout");
                all_done = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
        }
    }
    all_done
}

pub(crate) async fn delete(shared: &Shared, handles: &[String]) {
    let ok = for_entries(shared, "DeleteMessageBatch", handles, |entries| async move {
        let entries: Vec<_> = entries
            .into_iter()
            .filter_map(|(id, h)| DeleteMessageBatchRequestEntry::builder().id(id).receipt_handle(h).build().ok())
            .collect();
        let out = shared
            .client
            .delete_message_batch()
            .queue_url(&shared.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(out.failed.iter().map(|f| (f.id.clone(), f.sender_fault, f.code.clone())).collect())
    })
    .await;
    if !ok {
        warn!(source = %shared.name, "some delivered messages could not be deleted; SQS delivers them again");
    }
}

pub(crate) async fn change_visibility(shared: &Shared, handles: &[String], seconds: i32) {
    for_entries(shared, "ChangeMessageVisibilityBatch", handles, |entries| async move {
        let entries: Vec<_> = entries
            .into_iter()
            .filter_map(|(id, h)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(id)
                    .receipt_handle(h)
                    .visibility_timeout(seconds)
                    .build()
                    .ok()
            })
            .collect();
        let out = shared
            .client
            .change_message_visibility_batch()
            .queue_url(&shared.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(out.failed.iter().map(|f| (f.id.clone(), f.sender_fault, f.code.clone())).collect())
    })
    .await;
}
