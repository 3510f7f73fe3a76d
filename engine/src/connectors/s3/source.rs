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
//!   ([`super::checkpoint`]). An object that cannot be read is dead-lettered once: with
//!   `move` it is moved under `move_unreadable_to`; otherwise (or when it cannot be moved) it
//!   is left in place and recorded in the checkpoint object, in every `on_done` mode, so it is
//!   not read again until it is written again. `delete` never deletes data nobody read.
//!
//! On shutdown the source stops finding and reading objects; objects read to the end get up
//! to `drain_timeout` for their events to be acknowledged and to be finished. Objects not read
//! to the end are not finished: a restart reads them again (their events read before are the
//! only duplicates).

use super::checkpoint::{Book, Status, Store};
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
    /// Finished objects under `to`, unreadable ones under `unreadable`.
    Move {
        to: String,
        unreadable: String,
    },
}

/// The default `move_unreadable_to`: `unreadable/` beside `move_to` (`archive/done/` →
/// `archive/unreadable/`), so the two kinds of moved object sit side by side and neither is
/// under the other.
fn unreadable_beside(move_to: &str) -> String {
    let parent = move_to.trim_end_matches('/').rfind('/').map_or("", |i| &move_to[..=i]);
    format!("{parent}unreadable/")
}

/// Whether keys under `to` could be listed under `prefix` (objects moved there would be read
/// again); an empty `prefix` is allowed, since `wanted` skips the move targets.
fn overlaps(to: &str, prefix: &str) -> bool {
    to.starts_with(prefix) && !prefix.is_empty() || prefix.starts_with(to)
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
                let unreadable = match options.str("move_unreadable_to").filter(|p| !p.is_empty()) {
                    Some(u) => u.to_string(),
                    None => unreadable_beside(to),
                };
                for (option, target) in [("move_to", to), ("move_unreadable_to", unreadable.as_str())] {
                    if overlaps(target, &prefix) {
                        return Err(bad(format!(
                            "option `{option}` (`{target}`) must not overlap `prefix` (`{prefix}`): moved objects would be read again"
                        )));
                    }
                }
                OnDone::Move { to: to.to_string(), unreadable }
            }
            _ => OnDone::Checkpoint,
        };
        for option in ["move_to", "move_unreadable_to"] {
            if !matches!(on_done, OnDone::Move { .. }) && options.str(option).is_some() {
                return Err(bad(format!("option `{option}` is only used with `on_done = \"move\"`")));
            }
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
    /// The checkpoint object's key (every `on_done` mode records unreadable objects there).
    checkpoint: String,
    book: Book,
}

impl Shared {
    /// Whether `key` is one of the objects this source reads.
    fn wanted(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
            && !key.ends_with('/')
            && self.checkpoint != key
            && !matches!(&self.on_done, OnDone::Move { to, unreadable }
                if key.starts_with(to.as_str()) || key.starts_with(unreadable.as_str()))
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
                self.set_aside(key, &etag, &reason).await;
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

    /// An object dead-lettered whole: with `move`, moved under `move_unreadable_to`, so the
    /// prefix holds only what is still to read; otherwise, or if it cannot be moved (read
    /// access denied usually denies the copy too), left in place and recorded in the
    /// checkpoint, so a restart does not dead-letter it again. `delete` keeps it: deleting data
    /// nobody could read would lose it.
    async fn set_aside(&self, key: &str, etag: &str, reason: &str) {
        let not_moved = match &self.on_done {
            OnDone::Move { unreadable, .. } => {
                let target = self.moved_key(unreadable, key);
                match self.copy(key, &target).await {
                    Ok(()) => match self.delete(key).await {
                        Ok(()) => {
                            warn!(source = %self.name, key, to = %target, "dead-lettered the whole object, moved aside: {reason}");
                            // Gone from the prefix: nothing to remember.
                            self.book.abandon(key);
                            return;
                        }
                        Err(e) => format!(" (copied to `{target}`, but not deleted: {e})"),
                    },
                    Err(e) => format!(" (cannot be moved to `{target}`: {e})"),
                }
            }
            OnDone::Checkpoint | OnDone::Delete => String::new(),
        };
        warn!(source = %self.name, key, "dead-lettered the whole object, left in place and recorded{not_moved}: {reason}");
        self.book.unreadable(key, etag);
    }

    /// Where an object moved under `to` goes: the key's part after `prefix`, under `to`.
    fn moved_key(&self, to: &str, key: &str) -> String {
        format!("{to}{}", key.strip_prefix(self.prefix.as_str()).unwrap_or(key))
    }

    /// Delete or move a finished object. A failure is logged: the object stays in the book
    /// as finished, and the next listing that still shows it tries again.
    async fn on_done(&self, key: &str) {
        let result = match &self.on_done {
            OnDone::Checkpoint => return,
            OnDone::Delete => self.delete(key).await,
            OnDone::Move { to, .. } => {
                let target = self.moved_key(to, key);
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
            let checkpoint =
                self.checkpoint_key.clone().unwrap_or_else(|| format!(".phoenix/{}.checkpoint.json", ctx.name));
            let store = Store { client: client.clone(), bucket: self.bucket.bucket.clone(), key: checkpoint.clone() };
            let record = store.load().await.map_err(ConnectorError::new)?;
            // With `delete` or `move` a finished object leaves the prefix, so only unreadable
            // ones need remembering: the checkpoint is then written only when one is recorded.
            let keep_done = self.on_done == OnDone::Checkpoint;
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
                book: Book::new(record, keep_done),
            });
            let saved = CancellationToken::new();
            let writer = tokio::spawn(keep_saved(shared.clone(), store, saved.clone()));
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
            let _ = writer.await;
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
                // finished or recorded unreadable already, needs nothing more. An object whose
                // HEAD is refused too (access denied) was recorded without an ETag.
                if shared.book.knows(&c.key) {
                    let head = shared.client.head_object().bucket(&shared.bucket).key(&c.key).send().await;
                    let etag = head.as_ref().ok().and_then(|h| h.e_tag()).unwrap_or_default().trim_matches('"');
                    if matches!(shared.book.status(&c.key, etag), Status::Done | Status::Unreadable) {
                        continue;
                    }
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

#[cfg(test)]
mod tests {
    use super::{overlaps, unreadable_beside};

    #[test]
    fn unreadable_objects_go_beside_the_finished_ones() {
        assert_eq!(unreadable_beside("archive/done/"), "archive/unreadable/");
        assert_eq!(unreadable_beside("done/"), "unreadable/");
        assert_eq!(unreadable_beside("done"), "unreadable/");
        assert_eq!(unreadable_beside("a/b/done-"), "a/b/unreadable/");
        // Reading `unreadable/` itself: the default would be read again, so it is refused and
        // `move_unreadable_to` must be given.
        assert!(overlaps(&unreadable_beside("done/"), "unreadable/"));
        assert!(!overlaps("unreadable/", ""), "an empty prefix skips the move targets instead");
    }
}
