//! Reading one object: GetObject streamed through gzip (if compressed) into the NDJSON or
//! JSON-array splitter, every batch carrying the object's one [`Ack`], then waiting for it.
//!
//! Failures are of three kinds, and what happens next depends on which:
//! - the object is gone (deleted since it was found): nothing to do;
//! - it cannot be read for what it is (access denied, not JSON, not a JSON array, broken
//!   gzip): one dead letter for the whole object, with the reason; events read before the
//!   damage were sent as usual; it is left where it is and not read again until it changes;
//! - anything else (no connection, a timeout, a 5xx, the flow stopping, events not delivered):
//!   the object is not finished and will be read again.

use super::client::{Failure, classify};
use crate::connectors::lines::{ArrayError, Constant, Origin, read_array, read_ndjson};
use crate::connectors::{SourceContext, Stopped};
use crate::exec::ack::Ack;
use crate::exec::batch::RawBatchBuilder;
use aws_sdk_s3::Client;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, ReadBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Auto,
    Ndjson,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Auto,
    None,
    Gzip,
}

/// How a read ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Read to the end and every event acknowledged; the ETag read.
    Done { etag: String },
    /// Dead-lettered as a whole with this reason (the dead letter was acknowledged).
    Unreadable { etag: String, reason: String },
    /// Not there any more.
    Gone,
    /// Not finished; read it again later.
    Later(String),
}

/// What to read and how.
#[derive(Debug, Clone)]
pub struct Reading<'a> {
    pub client: &'a Client,
    pub bucket: &'a str,
    pub key: &'a str,
    /// The ETag a listing gave, if any: what an object that cannot even be fetched is
    /// recorded under.
    pub listed_etag: Option<&'a str>,
    pub format: Format,
    pub compression: Compression,
}

/// Read an object and wait until every event of it is acknowledged.
pub async fn read(r: Reading<'_>, ctx: Arc<SourceContext>) -> Outcome {
    let (ack, waiter) = Ack::new();
    let (bucket, key) = (r.bucket, r.key);
    let name: Arc<str> = Arc::from(format!("s3://{bucket}/{key}"));
    let read = read_events(&r, &ctx, &name, &ack).await;
    let (etag, unreadable) = match read {
        Ok(Read::Whole(etag)) => (etag, None),
        Ok(Read::Damaged(etag, reason)) => {
            let reason = format!("`{name}` {reason}");
            let mut b = RawBatchBuilder::default().finish(Vec::new(), ack.clone());
            let payload = serde_json::json!({ "bucket": bucket, "key": key, "etag": etag }).to_string();
            b.rejected.push((Bytes::from(payload), reason.clone()));
            if ctx.send(b).await.is_err() {
                return Outcome::Later("the flow is stopping".into());
            }
            (etag, Some(reason))
        }
        Err(outcome) => return outcome,
    };
    // Reading is over: the flow may drain without waiting for this task.
    drop(ctx);
    drop(ack);
    match waiter.wait().await {
        Ok(()) => match unreadable {
            None => Outcome::Done { etag },
            Some(reason) => Outcome::Unreadable { etag, reason },
        },
        Err(reason) => Outcome::Later(format!("events of `{name}` were not delivered: {reason}")),
    }
}

enum Read {
    /// Every event was sent.
    Whole(String),
    /// The object cannot be read (further), for this reason.
    Damaged(String, String),
}

async fn read_events(r: &Reading<'_>, ctx: &SourceContext, name: &Arc<str>, ack: &Ack) -> Result<Read, Outcome> {
    let (bucket, key, format, compression) = (r.bucket, r.key, r.format, r.compression);
    let out = match r.client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        Err(e) => {
            return match classify(&e) {
                Failure::Missing => Err(Outcome::Gone),
                // Recorded under the listed ETag: not fetched again until it changes.
                Failure::Refused(reason) => Ok(Read::Damaged(
                    r.listed_etag.unwrap_or_default().to_string(),
                    format!("cannot be read: {reason}"),
                )),
                Failure::Transient(reason) => Err(Outcome::Later(format!("reading `{name}`: {reason}"))),
            };
        }
    };
    let etag = out.e_tag().unwrap_or_default().trim_matches('"').to_string();
    let gzip = match compression {
        Compression::Gzip => true,
        Compression::None => false,
        Compression::Auto => {
            key.ends_with(".gz") || out.content_encoding().is_some_and(|e| e.to_ascii_lowercase().contains("gzip"))
        }
    };
    let mut origin = Origin { name: Some(name.clone()), ack: ack.clone(), ..Origin::default() };
    for (meta, value) in [
        ("bucket", Some(Constant::Str(Arc::from(bucket)))),
        ("key", Some(Constant::Str(Arc::from(key)))),
        ("object_size", out.content_length().map(Constant::Int)),
        (
            "last_modified",
            out.last_modified().and_then(|t| t.to_millis().ok()).map(|ms| Constant::Timestamp(ms * 1_000_000)),
        ),
    ] {
        if let Some(v) = value {
            origin.constants.push((meta, v));
        }
    }
    let body: Box<dyn AsyncRead + Send + Unpin> = Box::new(Transport(Box::pin(out.body.into_async_read())));
    let body: Box<dyn AsyncRead + Send + Unpin> = if gzip {
        let mut d = async_compression::tokio::bufread::GzipDecoder::new(BufReader::new(body));
        // `cat a.gz b.gz` is one valid gzip file.
        d.multiple_members(true);
        Box::new(d)
    } else {
        body
    };
    let mut input = BufReader::with_capacity(64 << 10, body);
    let failed = |e: std::io::Error| -> Result<Read, Outcome> {
        if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<TransportError>()) {
            Err(Outcome::Later(format!("reading `{name}`: {}", t.0)))
        } else if gzip {
            Ok(Read::Damaged(etag.clone(), format!("is not valid gzip: {e}")))
        } else {
            Ok(Read::Damaged(etag.clone(), format!("cannot be read: {e}")))
        }
    };
    // The first byte that is not whitespace decides what `auto` reads it as.
    let first = loop {
        let buf = match input.fill_buf().await {
            Ok(b) => b,
            Err(e) => return failed(e),
        };
        if buf.is_empty() {
            break None;
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => break Some(buf[i]),
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    };
    let array = match (format, first) {
        (_, None) => return Ok(Read::Whole(etag)),
        (Format::Json, _) | (Format::Auto, Some(b'[')) => true,
        (Format::Ndjson, _) | (Format::Auto, Some(b'{')) => false,
        (Format::Auto, Some(c)) => {
            return Ok(Read::Damaged(
                etag,
                format!("is not JSON: it starts with {} (neither `{{` of NDJSON nor `[` of an array)", shown(c)),
            ));
        }
    };
    let stopped = |_: Stopped| Err(Outcome::Later("the flow is stopping".into()));
    if array {
        match read_array(input, origin, ctx).await {
            Ok(Ok(())) => Ok(Read::Whole(etag)),
            Ok(Err(s)) => stopped(s),
            Err(ArrayError::Io(e)) => failed(e),
            Err(e @ ArrayError::Shape(_)) => Ok(Read::Damaged(etag, format!("is {e}"))),
        }
    } else {
        match read_ndjson(input, origin, ctx).await {
            Ok(Ok(())) => Ok(Read::Whole(etag)),
            Ok(Err(s)) => stopped(s),
            Err(e) => failed(e),
        }
    }
}

fn shown(c: u8) -> String {
    if c.is_ascii_graphic() { format!("`{}`", c as char) } else { format!("byte 0x{c:02x}") }
}

/// An error of the connection (not of the content), told apart from gzip's own errors.
#[derive(Debug)]
struct TransportError(String);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

/// The response body, its errors marked as [`TransportError`]s.
struct Transport(Pin<Box<dyn AsyncRead + Send>>);

impl AsyncRead for Transport {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.0.as_mut().poll_read(cx, buf) {
            Poll::Ready(Err(e)) => {
                Poll::Ready(Err(std::io::Error::new(e.kind(), TransportError(crate::connectors::aws::describe(&e)))))
            }
            other => other,
        }
    }
}
