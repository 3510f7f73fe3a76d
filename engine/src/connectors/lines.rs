//! Splitting a byte stream into NDJSON payloads, shared by the `file` and `stdin` sources.
//!
//! Reads in large chunks and cuts batches on line boundaries without copying: every batch
//! shares its chunk's buffer.

use super::{SourceContext, Stopped};
use crate::exec::ack::Ack;
use crate::exec::batch::RawBatch;
use arrow::array::{ArrayRef, Int64Array, StringArray};
use bytes::{Bytes, BytesMut};
use std::ops::Range;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};

const CHUNK: usize = 4 << 20;

/// Where the events come from, for `@file` / `@line` metadata.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `@file`, if the source has it.
    pub file: Option<Arc<str>>,
    /// Number of lines before the first byte read.
    pub line: i64,
}

/// Read `input` to its end (or until the flow stops), sending NDJSON lines in batches.
/// Blank lines are skipped; a final line without a newline counts.
pub async fn read_ndjson<R: AsyncRead + Unpin>(
    mut input: R,
    mut origin: Origin,
    ctx: &SourceContext,
) -> Result<Result<(), Stopped>, std::io::Error> {
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        if ctx.is_stopping() {
            return Ok(Err(Stopped));
        }
        if buf.capacity() - buf.len() < CHUNK / 4 {
            buf.reserve(CHUNK);
        }
        let read = tokio::select! {
            r = input.read_buf(&mut buf) => r?,
            _ = ctx.stopping() => return Ok(Err(Stopped)),
        };
        let eof = read == 0;
        // Cut after the last newline; keep the rest for the next read (or flush it at EOF).
        let cut = if eof { buf.len() } else { buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) };
        if cut > 0 {
            let chunk = buf.split_to(cut).freeze();
            if let Err(stop) = send_lines(chunk, &mut origin, ctx).await {
                return Ok(Err(stop));
            }
        }
        if eof {
            return Ok(Ok(()));
        }
    }
}

async fn send_lines(chunk: Bytes, origin: &mut Origin, ctx: &SourceContext) -> Result<(), Stopped> {
    let mut spans: Vec<Range<usize>> = Vec::with_capacity(ctx.batch_size.min(1 << 16));
    let mut lines: Vec<i64> = Vec::new();
    let line_read = ctx.reads_metadata("line");
    let mut start = 0;
    while start < chunk.len() {
        let end = memchr::memchr(b'\n', &chunk[start..]).map_or(chunk.len(), |i| start + i);
        origin.line += 1;
        let span = trim(&chunk, start..end);
        if !span.is_empty() {
            spans.push(span);
            if line_read {
                lines.push(origin.line);
            }
            if spans.len() == ctx.batch_size {
                ctx.send(batch(&chunk, std::mem::take(&mut spans), std::mem::take(&mut lines), origin, ctx)).await?;
            }
        }
        start = end + 1;
    }
    if !spans.is_empty() {
        ctx.send(batch(&chunk, spans, lines, origin, ctx)).await?;
    }
    Ok(())
}

fn batch(chunk: &Bytes, spans: Vec<Range<usize>>, lines: Vec<i64>, origin: &Origin, ctx: &SourceContext) -> RawBatch {
    let mut meta: Vec<(&'static str, ArrayRef)> = Vec::new();
    if ctx.reads_metadata("line") {
        meta.push(("line", Arc::new(Int64Array::from(lines))));
    }
    if let Some(f) = origin.file.as_ref().filter(|_| ctx.reads_metadata("file")) {
        meta.push(("file", Arc::new(StringArray::from_iter_values(std::iter::repeat_n(f.as_ref(), spans.len())))));
    }
    RawBatch { data: chunk.clone(), spans, meta, rejected: Vec::new(), ack: Ack::none() }
}

/// Without the trailing `\r` and surrounding whitespace.
fn trim(data: &[u8], mut r: Range<usize>) -> Range<usize> {
    while r.start < r.end && data[r.start].is_ascii_whitespace() {
        r.start += 1;
    }
    while r.end > r.start && data[r.end - 1].is_ascii_whitespace() {
        r.end -= 1;
    }
    r
}
