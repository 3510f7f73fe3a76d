//! The `s3` source: objects of a bucket, found by listing or by event notifications, read up to
//! `concurrency` at a time, each finished only once all its events are acknowledged.
//!
//! - **Listing** (`poll_interval`): ListObjectsV2 under `prefix` every `poll_interval` (or once,
//!   with `0s`, the source ending when every object listed is finished). An object is read if
//!   it is new or its ETag changed; one being read is not read twice.
//! - **Notifications** (`notifications`): one long-poll loop on the queue, a message in flight
//!   per free `concurrency` slot. Each message's objects are read in turn while its visibility
//!   is extended; it is deleted once they are all finished (or gone, or not ours), and made
//!   visible again at once if one is not.
//! - **Finished** objects are deleted, moved, or recorded in the checkpoint object
//!   ([`super::checkpoint`]); an object that cannot be read is dead-lettered once and left in
//!   place, and (in the checkpoint) not read again until it is written again.
//!
//! On shutdown the source stops finding and reading objects; objects read to the end get up
//! to `drain_timeout` for their events to be acknowledged and to be finished. Objects not read
//! to the end are not finished: a restart reads them again (their events read before are the
//! only duplicates).

use super::checkpoint::{Book, Record, Status, Store};
use super::client::{BucketConfig, Failure, classify, describe};
use super::notification::{Notice, parse};
use super::object::{self, Compression, Format, Outcome, Reading};
use crate::connectors::sqs::client::QueueConfig;
use crate::connectors::sqs::source as sqs;
use crate::connectors::{BoxFuture, ConnectorError, Source, SourceContext};
use crate::observability::readiness::Throttled;
use crate::options::Options;
use aws_sdk_s3::Client;
use aws_sdk_sqs::types::Message;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Debug, Clone, PartialEq, Eq)]
enum OnDone {
    Checkpoint,
    Delete,
    /// Under this prefix.
    Move(String),
}

#[derive(Debug)]
pub struct S3Source {
    bucket: BucketConfig,
    prefix: String,
    glob: Option<glob::Pattern>,
    format: Format,
    compression: Compression,
    poll_interval: Duration,
    notifications: Option<QueueConfig>,
    concurrency: usize,
    on_done: OnDone,
    checkpoint_key: Option<String>,
    visibility: Duration,
    drain_timeout: Duration,
}

impl S3Source {
    pub fn new(options: &Options) -> Result<S3Source, ConnectorError> {
        let bad = |m: String| ConnectorError::new(m);
        let bucket = BucketConfig::new(options)?;
        let prefix = options.str("prefix").unwrap_or_default().to_string();
        let glob = match options.str("glob").filter(|g| !g.is_empty()) {
            Some(g) => {
                Some(glob::Pattern::new(g).map_err(|e| bad(format!("option `glob`: `{g}` is not a glob: {e}")))?)
            }
            None => None,
        };
        let format = match options.str("format").unwrap_or("auto") {
            "ndjson" => Format::Ndjson,
            "json" => Format::Json,
            _ => Format::Auto,
        };
        let compression = match options.str("compression").unwrap_or("auto") {
            "gzip" => Compression::Gzip,
            "none" => Compression::None,
            _ => Compression::Auto,
        };
        let on_done = match options.str("on_done").unwrap_or("checkpoint") {
            "delete" => OnDone::Delete,
            "move" => {
                let to = options.str("move_to").filter(|p| !p.is_empty()).ok_or_else(|| {
                    bad("`on_done = \"move\"` needs `move_to`, the prefix to move finished objects under".into())
                })?;
                if to.starts_with(&prefix) && !prefix.is_empty() || prefix.starts_with(to) {
                    return Err(bad(format!(
                        "option `move_to` (`{to}`) must not overlap `prefix` (`{prefix}`): moved objects would be read again"
                    )));
                }
                OnDone::Move(to.to_string())
            }
            _ => OnDone::Checkpoint,
        };
        if on_done != OnDone::Checkpoint && options.str("checkpoint_key").is_some() {
            return Err(bad("option `checkpoint_key` is only used with `on_done = \"checkpoint\"`".into()));
        }
        if !matches!(on_done, OnDone::Move(_)) && options.str("move_to").is_some() {
            return Err(bad("option `move_to` is only used with `on_done = \"move\"`".into()));
        }
        let notifications = match options.str("notifications").filter(|u| !u.is_empty()) {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(QueueConfig::at(url.to_string(), options)?)
            }
            Some(url) => return Err(bad(format!("option `notifications` must be an SQS queue URL, got `{url}`"))),
            None => None,
        };
        let visibility = options.duration("visibility_timeout").unwrap_or(Duration::from_secs(60));
        if !(Duration::from_secs(2)..=Duration::from_secs(12 * 3600)).contains(&visibility) {
            return Err(bad("option `visibility_timeout` must be between 2s and 12h".into()));
        }
        Ok(S3Source {
            bucket,
            prefix,
            glob,
            format,
            compression,
            poll_interval: options.duration("poll_interval").unwrap_or(Duration::from_secs(10)),
            notifications,
            concurrency: options.positive("concurrency").map_err(|e| bad(e.to_string()))?,
            on_done,
            checkpoint_key: options.str("checkpoint_key").filter(|k| !k.is_empty()).map(String::from),
            visibility,
            drain_timeout: options.duration("drain_timeout").unwrap_or(Duration::from_secs(30)),
        })
    }
}

/// What the object tasks share.
struct Shared {
    name: String,
    client: Client,
    bucket: String,
    prefix: String,
    glob: Option<glob::Pattern>,
    format: Format,
    compression: Compression,
    on_done: OnDone,
    /// The checkpoint object's key (with `on_done = "checkpoint"`).
    checkpoint: Option<String>,
    book: Book,
}

impl Shared {
    /// Whether `key` is one of the objects this source reads.
    fn wanted(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
            && !key.ends_with('/')
            && self.checkpoint.as_deref() != Some(key)
            && !matches!(&self.on_done, OnDone::Move(to) if key.starts_with(to.as_str()))
            && self.glob.as_ref().is_none_or(|g| {
                g.matches_with(key, glob::MatchOptions { require_literal_separator: true, ..Default::default() })
            })
    }

    /// Read one object (already claimed in the book) and finish it; `Err` if it is not finished.
    async fn process(&self, key: &str, listed_etag: Option<&str>, ctx: Arc<SourceContext>) -> Result<(), String> {
        let reading = Reading {
            client: &self.client,
            bucket: &self.bucket,
            key,
            listed_etag,
            format: self.format,
            compression: self.compression,
        };
        debug!(source = %self.name, key, "reading");
        let outcome = object::read(reading, ctx).await;
        self.finish(key, outcome).await
    }

    async fn finish(&self, key: &str, outcome: Outcome) -> Result<(), String> {
        match outcome {
            Outcome::Done { etag } => {
                self.on_done(key).await;
                self.book.done(key, &etag);
                debug!(source = %self.name, key, "finished");
                Ok(())
            }
            Outcome::Unreadable { etag, reason } => {
                warn!(source = %self.name, key, "dead-lettered the whole object, left in place: {reason}");
                self.book.unreadable(key, &etag);
                Ok(())
            }
            Outcome::Gone => {
                debug!(source = %self.name, key, "gone before it was read");
                self.book.abandon(key);
                Ok(())
            }
            Outcome::Later(reason) => {
                self.book.abandon(key);
                Err(reason)
            }
        }
    }

    /// Delete or move a finished object. A failure is logged: the object stays in the book
    /// as finished, and the next listing that still shows it tries again.
    async fn on_done(&self, key: &str) {
        let result = match &self.on_done {
            OnDone::Checkpoint => return,
            OnDone::Delete => self.delete(key).await,
            OnDone::Move(to) => {
                let target = format!("{to}{}", key.strip_prefix(self.prefix.as_str()).unwrap_or(key));
                self.copy(key, &target).await.and(self.delete(key).await)
            }
        };
        if let Err(e) = result {
            warn!(source = %self.name, key, "finished, but could not be {}d (tried again on the next listing): {e}",
                if self.on_done == OnDone::Delete { "delete" } else { "move" });
        }
    }

    async fn delete(&self, key: &str) -> Result<(), String> {
        match self.client.delete_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(()),
            Err(e) if classify(&e) == Failure::Missing => Ok(()),
            Err(e) => Err(describe(&e)),
        }
    }

    async fn copy(&self, key: &str, target: &str) -> Result<(), String> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(target)
            .copy_source(format!("{}/{}", self.bucket, encode_key(key)))
            .send()
            .await
            .map(drop)
            .map_err(|e| describe(&e))
    }

    /// Every object under the prefix: key, ETag.
    async fn list(&self) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| describe(&e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push((k.to_string(), o.e_tag().unwrap_or_default().trim_matches('"').to_string()));
                }
            }
            token = page.next_continuation_token().map(String::from);
            if token.is_none() || page.is_truncated() != Some(true) {
                return Ok(out);
            }
        }
    }
}

/// A key in `x-amz-copy-source`: URL-encoded, `/` kept.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Source for S3Source {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(async move {
            let client = self.bucket.client(Duration::from_secs(60)).await;
            let checkpoint = (self.on_done == OnDone::Checkpoint).then(|| {
                self.checkpoint_key.clone().unwrap_or_else(|| format!(".phoenix/{}.checkpoint.json", ctx.name))
            });
            let store = checkpoint.as_ref().map(|key| Store {
                client: client.clone(),
                bucket: self.bucket.bucket.clone(),
                key: key.clone(),
            });
            let record = match &store {
                Some(s) => s.load().await.map_err(ConnectorError::new)?,
                None => Record::default(),
            };
            let shared = Arc::new(Shared {
                name: ctx.name.clone(),
                client,
                bucket: self.bucket.bucket.clone(),
                prefix: self.prefix.clone(),
                glob: self.glob.clone(),
                format: self.format,
                compression: self.compression,
                on_done: self.on_done.clone(),
                checkpoint,
                book: Book::new(record),
            });
            let saved = CancellationToken::new();
            let writer = store.map(|s| tokio::spawn(keep_saved(shared.clone(), s, saved.clone())));
            let ctx = Arc::new(ctx);
            let slots = Arc::new(Semaphore::new(self.concurrency));
            let mut tasks: JoinSet<Result<(), String>> = JoinSet::new();
            let found = match &self.notifications {
                None => {
                    info!(source = %shared.name, bucket = %shared.bucket, prefix = %shared.prefix, "listing");
                    list_loop(&shared, &ctx, &slots, &mut tasks, self.poll_interval).await
                }
                Some(q) => {
                    info!(source = %shared.name, bucket = %shared.bucket, queue = %q.queue_url, "receiving notifications");
                    let queue = Arc::new(sqs::Shared {
                        name: shared.name.clone(),
                        client: q.client(Duration::from_secs(30)).await,
                        queue_url: q.queue_url.clone(),
                        wait_time: Duration::from_secs(20),
                        visibility: self.visibility,
                        throttle: Throttled::default(),
                    });
                    notification_loop(&shared, &queue, &ctx, &slots, &mut tasks).await;
                    Ok(())
                }
            };
            // The flow may drain once no task reading an object holds the context.
            drop(ctx);
            let deadline = Instant::now() + self.drain_timeout;
            while !tasks.is_empty() {
                if tokio::time::timeout_at(deadline, tasks.join_next()).await.is_err() {
                    warn!(source = %shared.name, objects = tasks.len(),
                        "stopping with objects not finished; they are read again on restart");
                    tasks.abort_all();
                    break;
                }
            }
            saved.cancel();
            if let Some(w) = writer {
                let _ = w.await;
            }
            found
        })
    }
}

/// Write the checkpoint whenever the book changed, and once more at the end.
async fn keep_saved(shared: Arc<Shared>, store: Store, end: CancellationToken) {
    let mut last = shared.book.snapshot();
    let mut failures = 0u32;
    loop {
        let ending = tokio::select! {
            _ = shared.book.changed.notified() => false,
            _ = end.cancelled() => true,
        };
        let now = shared.book.snapshot();
        if now != last || failures > 0 {
            match store.save(&now).await {
                Ok(()) => {
                    last = now;
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    warn!(source = %shared.name, key = %store.key, "cannot write the checkpoint (finished objects are read again after a restart until it is written): {e}");
                    if !ending {
                        tokio::time::sleep(Duration::from_millis(200 << failures.min(5))).await;
                        shared.book.changed.notify_one();
                    }
                }
            }
        }
        if ending {
            return;
        }
    }
}

/// List, read what is new, wait `poll_interval`, until stopped (or, with `0s`, once).
async fn list_loop(
    shared: &Arc<Shared>,
    ctx: &Arc<SourceContext>,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<Result<(), String>>,
    poll_interval: Duration,
) -> Result<(), ConnectorError> {
    let mut failures = 0u32;
    let throttle = Throttled::default();
    'poll: while !ctx.is_stopping() {
        let listed = match shared.list().await {
            Ok(l) => {
                failures = 0;
                ctx.set_connected();
                l
            }
            Err(e) => {
                failures += 1;
                if poll_interval.is_zero() && failures >= 5 {
                    return Err(ConnectorError::new(format!(
                        "cannot list `s3://{}/{}`: {e}",
                        shared.bucket, shared.prefix
                    )));
                }
                let line = throttle
                    .line(format_args!("listing `s3://{}/{}` failed: {e}; trying again", shared.bucket, shared.prefix));
                if let Some(line) = line {
                    warn!(source = %shared.name, "{line}");
                }
                let pause =
                    Duration::from_millis(500 << failures.min(5)).min(poll_interval.max(Duration::from_secs(1)));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = ctx.stopping() => {}
                }
                continue;
            }
        };
        shared.book.keep_only(&listed.iter().map(|(k, _)| k.as_str()).collect::<HashSet<_>>());
        for (key, etag) in listed {
            if !shared.wanted(&key) {
                continue;
            }
            let status = shared.book.status(&key, &etag);
            let retry_on_done = status == Status::Done && shared.on_done != OnDone::Checkpoint;
            if status != Status::New && !retry_on_done {
                continue;
            }
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = ctx.stopping() => break 'poll,
            };
            if !shared.book.start(&key) {
                continue;
            }
            let (s, c) = (shared.clone(), ctx.clone());
            tasks.spawn(async move {
                let _permit = permit;
                if retry_on_done {
                    // Finished before; only deleting or moving it failed.
                    s.on_done(&key).await;
                    s.book.done(&key, &etag);
                    return Ok(());
                }
                s.process(&key, Some(&etag), c).await.map_err(|e| format!("`{key}`: {e}"))
            });
            while let Some(done) = tasks.try_join_next() {
                log_unfinished(shared, done);
            }
        }
        if poll_interval.is_zero() {
            let mut unfinished = Vec::new();
            while let Some(done) = tasks.join_next().await {
                if let Ok(Err(e)) = done {
                    unfinished.push(e);
                }
            }
            if unfinished.is_empty() || ctx.is_stopping() {
                return Ok(());
            }
            return Err(ConnectorError::new(format!(
                "{} object(s) could not be finished, first: {}",
                unfinished.len(),
                unfinished[0]
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(poll_interval) => {}
            _ = ctx.stopping() => {}
        }
    }
    Ok(())
}

fn log_unfinished(shared: &Shared, done: Result<Result<(), String>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(source = %shared.name, "not finished, read again later: {e}"),
        Err(e) => warn!(source = %shared.name, "an object task failed: {e}"),
    }
}

/// Receive notifications while there is a free slot; each message gets a task.
async fn notification_loop(
    shared: &Arc<Shared>,
    queue: &Arc<sqs::Shared>,
    ctx: &Arc<SourceContext>,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<Result<(), String>>,
) {
    let mut failures = 0u32;
    while !ctx.is_stopping() {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = ctx.stopping() => return,
        };
        let mut permits = vec![first];
        while permits.len() < 10 {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let receive = queue
            .client
            .receive_message()
            .queue_url(&queue.queue_url)
            .max_number_of_messages(permits.len() as i32)
            .wait_time_seconds(queue.wait_time.as_secs() as i32)
            .visibility_timeout(queue.visibility.as_secs() as i32)
            .send();
        let received = tokio::select! {
            r = receive => r,
            _ = ctx.stopping() => return,
        };
        let messages = match received {
            Ok(out) => {
                failures = 0;
                ctx.set_connected();
                out.messages.unwrap_or_default()
            }
            Err(e) => {
                failures += 1;
                if let Some(line) =
                    queue.throttle.line(format_args!("ReceiveMessage failed: {}; retrying", describe(&e)))
                {
                    warn!(source = %shared.name, "{line}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50)))) => {}
                    _ = ctx.stopping() => {}
                }
                continue;
            }
        };
        for (m, permit) in messages.into_iter().zip(permits) {
            tasks.spawn(handle_message(shared.clone(), queue.clone(), ctx.clone(), m, permit));
        }
        while let Some(done) = tasks.try_join_next() {
            log_unfinished(shared, done);
        }
    }
}

/// Read the objects one notification names, keeping it hidden meanwhile; delete it once they
/// are finished, release it if one is not.
async fn handle_message(
    shared: Arc<Shared>,
    queue: Arc<sqs::Shared>,
    ctx: Arc<SourceContext>,
    m: Message,
    _permit: OwnedSemaphorePermit,
) -> Result<(), String> {
    let Some(handle) = m.receipt_handle.clone() else { return Ok(()) };
    let handles = [handle];
    let created = match parse(m.body().unwrap_or_default()) {
        Notice::Created(c) => c,
        Notice::Foreign(why) => {
            // Not ours to delete: it comes back after its visibility timeout, and the queue's
            // redrive policy moves it aside.
            warn!(source = %shared.name, message = ?m.message_id, "not an S3 event notification, left in the queue: {why}");
            return Ok(());
        }
    };
    let work = {
        let shared = shared.clone();
        async move {
            let mut unfinished = None;
            for c in created.iter().filter(|c| c.bucket == shared.bucket && shared.wanted(&c.key)) {
                // A notification for an object being read for another one (a duplicate), or
                // finished already, needs nothing more.
                if shared.on_done == OnDone::Checkpoint
                    && let Ok(head) = shared.client.head_object().bucket(&shared.bucket).key(&c.key).send().await
                    && shared.book.status(&c.key, head.e_tag().unwrap_or_default().trim_matches('"')) == Status::Done
                {
                    continue;
                }
                if !shared.book.start(&c.key) {
                    continue;
                }
                if let Err(e) = shared.process(&c.key, None, ctx.clone()).await {
                    unfinished = Some(format!("`{}`: {e}", c.key));
                }
            }
            unfinished
        }
    };
    tokio::pin!(work);
    let every = queue.visibility / 3;
    let unfinished = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tokio::time::sleep(every) => {
                sqs::change_visibility(&queue, &handles, queue.visibility.as_secs() as i32).await;
            }
        }
    };
    match unfinished {
        None => {
            sqs::delete(&queue, &handles).await;
            Ok(())
        }
        Some(e) => {
            sqs::change_visibility(&queue, &handles, 0).await;
            Err(e)
        }
    }
}
