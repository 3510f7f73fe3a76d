//! The `s3` sink: each group the engine gathers (bounded by `max_events`, `max_bytes` and
//! `max_age`, see [`Sink::batching`]) becomes one NDJSON object per key prefix.
//!
//! `write` evaluates nothing itself: the engine hands each event's `key` value beside it. The
//! sink appends each event to its prefix's buffer. `flush` uploads every buffer as
//! `<prefix><UTC time>-<random>.jsonl[.gz]` (a multipart upload when larger than
//! `part_size`) and returns once S3 confirmed each; events are acknowledged then. Objects that
//! failed are reported as a [`WriteError::Partial`] listing their events, so the engine writes
//! only those again (into a new object) and the objects that made it are not duplicated.

use super::client::{BucketConfig, describe};
use crate::connectors::{Batching, BoxFuture, ConnectorError, ItemFailure, PartialFailure, Sink, WriteError};
use crate::exec::batch::SinkBatch;
use crate::observability::readiness::Throttled;
use crate::options::Options;
use arrow::array::{Array, AsArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::StreamExt;
use indexmap::IndexMap;
use std::io::Write;
use std::time::Duration;

/// S3's smallest part but the last.
const MIN_PART: u64 = 5 << 20;
/// Parts uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;

pub struct S3Sink {
    bucket: BucketConfig,
    client: Option<Client>,
    gzip: bool,
    max_events: usize,
    max_bytes: usize,
    max_age: Duration,
    part_size: usize,
    /// Per key prefix: the NDJSON so far and the positions (since the last flush) of its events.
    pending: IndexMap<String, Pending>,
    /// Events written since the last flush.
    written: usize,
}

#[derive(Debug, Default)]
struct Pending {
    data: Vec<u8>,
    positions: Vec<usize>,
}

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Sink").field("bucket", &self.bucket.bucket).finish_non_exhaustive()
    }
}

impl S3Sink {
    pub fn new(options: &Options) -> Result<S3Sink, ConnectorError> {
        let bad = |m: &str| ConnectorError::new(m);
        let bucket = BucketConfig::new(options)?;
        let size = |name: &str| options.size(name).and_then(|s| usize::try_from(s).ok());
        let part_size = size("part_size").unwrap_or(8 << 20);
        if (part_size as u64) < MIN_PART {
            return Err(bad("option `part_size` must be at least 5MiB (S3's smallest part)"));
        }
        let max_bytes =
            size("max_bytes").filter(|b| *b > 0).ok_or_else(|| bad("option `max_bytes` must be positive"))?;
        Ok(S3Sink {
            bucket,
            client: None,
            gzip: options.str("compression") == Some("gzip"),
            max_events: options.positive("max_events").map_err(|e| ConnectorError::new(e.to_string()))?,
            max_bytes,
            max_age: options.duration("max_age").unwrap_or(Duration::from_secs(30)),
            part_size,
            pending: IndexMap::new(),
            written: 0,
        })
    }

    async fn client(&mut self) -> Client {
        match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = self.bucket.client(Duration::from_secs(120)).await;
                self.client = Some(c.clone());
                c
            }
        }
    }
}

/// A new object's key: the prefix, the time, and enough randomness that two writers (or two
/// replicas) never pick the same.
fn object_key(prefix: &str, gzip: bool) -> String {
    let now = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let ext = if gzip { "jsonl.gz" } else { "jsonl" };
    format!("{prefix}{now}-{:016x}.{ext}", fastrand::u64(..))
}

impl Sink for S3Sink {
    /// Connected once S3 answered a HeadBucket for the bucket (or an upload succeeded).
    fn connected(&self) -> Option<BoxFuture<'static, ()>> {
        let bucket = self.bucket.clone();
        Some(Box::pin(async move {
            let client = bucket.client(Duration::from_secs(30)).await;
            let throttle = Throttled::default();
            loop {
                match client.head_bucket().bucket(&bucket.bucket).send().await {
                    Ok(_) => return,
                    Err(e) => {
                        let line = throttle.line(format_args!(
                            "cannot reach bucket {}: {}; retrying",
                            bucket.bucket,
                            describe(&e)
                        ));
                        if let Some(line) = line {
                            tracing::warn!(bucket = %bucket.bucket, "{line}");
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }

    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            let keys: Option<StringArray> = match batch.field("key") {
                Some(a) if a.data_type() == &DataType::Utf8 => Some(a.as_string::<i32>().clone()),
                Some(a) => Some(
                    cast(a, &DataType::Utf8)
                        .map_err(|e| WriteError::Fatal(format!("`key`: {e}")))?
                        .as_string::<i32>()
                        .clone(),
                ),
                None => None,
            };
            let mut refused = Vec::new();
            for i in 0..batch.len() {
                let prefix = match &keys {
                    Some(k) if k.is_null(i) => {
                        refused.push(ItemFailure {
                            index: i,
                            retryable: false,
                            error: "the `key` expression is NULL for this event".into(),
                        });
                        continue;
                    }
                    Some(k) => k.value(i),
                    None => "",
                };
                let p = self.pending.entry(prefix.to_string()).or_default();
                p.data.extend_from_slice(batch.payloads.value(i));
                p.data.push(b'\n');
                p.positions.push(self.written);
                self.written += 1;
            }
            if refused.is_empty() {
                Ok(())
            } else {
                // The other events are kept: a partial failure of `write` covers only these.
                Err(WriteError::Partial(PartialFailure { items: refused }))
            }
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(async move {
            let client = self.client().await;
            let pending = std::mem::take(&mut self.pending);
            self.written = 0;
            let (gzip, part_size) = (self.gzip, self.part_size);
            let bucket = self.bucket.bucket.clone();
            let uploads = pending.into_iter().map(|(prefix, p)| {
                let (client, bucket) = (client.clone(), bucket.clone());
                async move {
                    let key = object_key(&prefix, gzip);
                    let result = upload(&client, &bucket, &key, p.data, gzip, part_size).await;
                    (key, p.positions, result)
                }
            });
            let results: Vec<_> = futures::stream::iter(uploads).buffer_unordered(PARTS_IN_FLIGHT).collect().await;
            let mut items = Vec::new();
            for (key, positions, result) in results {
                if let Err(e) = result {
                    let error = format!("uploading `s3://{bucket}/{key}`: {e}");
                    items.extend(positions.into_iter().map(|index| ItemFailure {
                        index,
                        retryable: true,
                        error: error.clone(),
                    }));
                }
            }
            if items.is_empty() {
                return Ok(());
            }
            items.sort_by_key(|i| i.index);
            Err(WriteError::Partial(PartialFailure { items }))
        })
    }

    fn batching(&self) -> Batching {
        Batching {
            // Every batch holds at least one event, so the event bound also bounds batches.
            max_batches: usize::MAX,
            max_events: self.max_events,
            max_bytes: self.max_bytes,
            linger: self.max_age,
        }
    }
}

/// Upload one object: in one PutObject, or in parts when larger than `part_size`.
async fn upload(
    client: &Client,
    bucket: &str,
    key: &str,
    data: Vec<u8>,
    gzip: bool,
    part_size: usize,
) -> Result<(), String> {
    let body: Bytes = if gzip {
        // Compressing tens of megabytes is CPU work: off the async workers.
        tokio::task::spawn_blocking(move || {
            let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), flate2::Compression::fast());
            e.write_all(&data).and_then(|_| e.finish())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("gzip: {e}"))?
        .into()
    } else {
        data.into()
    };
    let encoding = gzip.then_some("gzip");
    if body.len() <= part_size {
        return client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/x-ndjson")
            .set_content_encoding(encoding.map(String::from))
            .body(ByteStream::from(body))
            .send()
            .await
            .map(drop)
            .map_err(|e| describe(&e));
    }
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("application/x-ndjson")
        .set_content_encoding(encoding.map(String::from))
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let id = created.upload_id().ok_or("CreateMultipartUpload returned no upload id")?.to_string();
    let parts = (0..body.len().div_ceil(part_size)).map(|n| {
        let chunk = body.slice(n * part_size..((n + 1) * part_size).min(body.len()));
        let id = id.clone();
        async move {
            let number = n as i32 + 1;
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| describe(&e))?;
            Ok::<_, String>(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag).build())
        }
    });
    let done: Result<Vec<CompletedPart>, String> =
        futures::stream::iter(parts).buffered(PARTS_IN_FLIGHT).collect::<Vec<_>>().await.into_iter().collect();
    let count = match &done {
        Ok(parts) => parts.len(),
        Err(_) => 0,
    };
    let completed = match done {
        Ok(parts) => {
            let answer = client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await;
            match answer {
                Ok(_) => Ok(()),
                // S3 refused it: the upload is not an object.
                Err(e) if e.as_service_error().and_then(|s| s.meta().code()).is_some() => Err(describe(&e)),
                // No answer, or one that could not be read (moto 5 answers with another root
                // element than S3's): the key is ours alone, so the object being there with
                // this many parts means the upload completed.
                Err(e) => match client.head_object().bucket(bucket).key(key).send().await {
                    Ok(head) if head.e_tag().is_some_and(|t| t.trim_matches('"').ends_with(&format!("-{count}"))) => {
                        Ok(())
                    }
                    _ => Err(describe(&e)),
                },
            }
        }
        Err(e) => Err(e),
    };
    if completed.is_err() {
        // Parts of an upload never completed are stored (and billed) until aborted.
        let _ = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&id).send().await;
    }
    completed
}
