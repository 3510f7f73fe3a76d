//! Splitting a byte stream into payloads, shared by the `file`, `stdin` and `s3` sources: NDJSON
//! lines ([`read_ndjson`]) or the elements of one JSON array ([`read_array`], streamed: an
//! array of any size is read in chunks, never whole).
//!
//! Reads in large chunks and cuts batches on event boundaries without copying: every batch
//! shares its chunk's buffer.

use super::{SourceContext, Stopped};
use crate::exec::ack::Ack;
use crate::exec::batch::{Place, RawBatch};
use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampNanosecondArray};
use bytes::{Bytes, BytesMut};
use std::ops::Range;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};

const CHUNK: usize = 4 << 20;

/// Where the events come from: the metadata every event of it shares, line numbers, the
/// acknowledgement its batches carry.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Metadata with one value for the whole input (`@file`, `@bucket`, `@key`), each sent
    /// only if the flow reads it.
    pub constants: Vec<(&'static str, Constant)>,
    /// Number of lines (or array items) before the first byte read.
    pub line: i64,
    /// Names the input in dead letters (`` `s3://b/k` line 3: … ``); `None`: reasons alone.
    pub name: Option<Arc<str>>,
    /// Carried by every batch.
    pub ack: Ack,
}

/// One metadata value shared by every event of an input.
#[derive(Debug, Clone)]
pub enum Constant {
    Str(Arc<str>),
    Int(i64),
    /// Nanoseconds since the epoch, UTC.
    Timestamp(i64),
}

impl Constant {
    fn array(&self, n: usize) -> ArrayRef {
        match self {
            Constant::Str(s) => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(s.as_ref(), n))),
            Constant::Int(v) => Arc::new(Int64Array::from(vec![*v; n])),
            Constant::Timestamp(v) => Arc::new(TimestampNanosecondArray::from(vec![*v; n]).with_timezone("UTC")),
        }
    }
}

/// Reads more of `input` into `buf`, growing it by a chunk when nearly full: the bytes read (0 at
/// the end), or `Stopped` once the flow stops.
async fn fill<R: AsyncRead + Unpin>(
    input: &mut R,
    buf: &mut BytesMut,
    ctx: &SourceContext,
) -> std::io::Result<Result<usize, Stopped>> {
    if ctx.is_stopping() {
        return Ok(Err(Stopped));
    }
    if buf.capacity() - buf.len() < CHUNK / 4 {
        buf.reserve(CHUNK);
    }
    tokio::select! {
        r = input.read_buf(buf) => r.map(Ok),
        _ = ctx.stopping() => Ok(Err(Stopped)),
    }
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
        let Ok(read) = fill(&mut input, &mut buf, ctx).await? else {
            return Ok(Err(Stopped));
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
    let mut start = 0;
    while start < chunk.len() {
        let end = memchr::memchr(b'\n', &chunk[start..]).map_or(chunk.len(), |i| start + i);
        origin.line += 1;
        let span = trim(&chunk, start..end);
        if !span.is_empty() {
            spans.push(span);
            lines.push(origin.line);
            if spans.len() == ctx.batch_size {
                let b = batch(&chunk, std::mem::take(&mut spans), std::mem::take(&mut lines), "line", origin, ctx);
                ctx.send(b).await?;
            }
        }
        start = end + 1;
    }
    if !spans.is_empty() {
        ctx.send(batch(&chunk, spans, lines, "line", origin, ctx)).await?;
    }
    Ok(())
}

fn batch(
    chunk: &Bytes,
    spans: Vec<Range<usize>>,
    lines: Vec<i64>,
    unit: &'static str,
    origin: &Origin,
    ctx: &SourceContext,
) -> RawBatch {
    let mut meta: Vec<(&'static str, ArrayRef)> = Vec::new();
    let n = spans.len();
    let lines: Arc<[i64]> = lines.into();
    if ctx.reads_metadata("line") {
        meta.push(("line", Arc::new(Int64Array::from(lines.to_vec()))));
    }
    for (name, value) in &origin.constants {
        if ctx.reads_metadata(name) {
            meta.push((name, value.array(n)));
        }
    }
    let place = origin.name.as_ref().map(|object| Place { object: object.clone(), unit, numbers: lines });
    RawBatch { data: chunk.clone(), spans, meta, rejected: Vec::new(), ack: origin.ack.clone(), place }
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

/// Why an input could not be read as one JSON array (what came before was sent).
#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a JSON array of events: {0}")]
    Shape(String),
}

/// Read `input`, one JSON array, to its end (or until the flow stops), sending its elements as
/// events in batches with their 1-based position as `@line`. Memory stays at a few chunks
/// whatever the array's size: the elements of each chunk read are cut out where they lie.
///
/// Whether each element is a valid event is the decoder's business (it explains why not);
/// this only finds where elements begin and end. An input that is not one array (another
/// value, an empty element, an unclosed array, data after it) is an [`ArrayError::Shape`] at
/// the point it is found.
pub async fn read_array<R: AsyncRead + Unpin>(
    mut input: R,
    mut origin: Origin,
    ctx: &SourceContext,
) -> Result<Result<(), Stopped>, ArrayError> {
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut splitter = Splitter::default();
    loop {
        let Ok(read) = fill(&mut input, &mut buf, ctx).await? else {
            return Ok(Err(Stopped));
        };
        let eof = read == 0;
        let mut spans = Vec::new();
        let scanned = splitter.scan(&mut buf, &mut spans);
        let cut = splitter.cut();
        if cut > 0 {
            let chunk = buf.split_to(cut).freeze();
            splitter.shift(cut);
            for part in spans.chunks(ctx.batch_size) {
                let first = origin.line;
                origin.line += part.len() as i64;
                let numbers = (first + 1..=origin.line).collect();
                if let Err(stop) = ctx.send(batch(&chunk, part.to_vec(), numbers, "item", &origin, ctx)).await {
                    return Ok(Err(stop));
                }
            }
        }
        scanned.map_err(ArrayError::Shape)?;
        if eof {
            return splitter.finish().map(Ok).map_err(ArrayError::Shape);
        }
    }
}

/// Where the scan of an array stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Before the opening `[`.
    #[default]
    Start,
    /// After `[`: an element or `]`.
    First,
    /// After a `,`: an element.
    Next,
    /// Inside an element that began at `Splitter::start`.
    Element,
    /// After `]`: only whitespace.
    Done,
}

/// Finds the top-level elements of one JSON array in a buffer that grows at the end and is cut
/// at the front. Tracks strings (with escapes) and nesting, so a `,` or `]` inside an element
/// does not end it. The `,` after each element is overwritten with `\n`, so the elements of a
/// chunk are separated by whitespace only, as a batch's payloads must be.
#[derive(Debug, Default)]
struct Splitter {
    state: State,
    /// Next byte of the buffer to look at.
    pos: usize,
    /// Start of the element being scanned.
    start: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Bytes cut off the buffer's front so far, to give positions in the whole input.
    consumed: u64,
}

impl Splitter {
    /// Scan what is new in `buf`, pushing each complete element's span (trimmed).
    fn scan(&mut self, buf: &mut [u8], out: &mut Vec<Range<usize>>) -> Result<(), String> {
        while self.pos < buf.len() {
            let i = self.pos;
            let c = buf[i];
            self.pos += 1;
            match self.state {
                State::Element => {
                    if self.in_string {
                        if self.escaped {
                            self.escaped = false;
                        } else if c == b'\\' {
                            self.escaped = true;
                        } else if c == b'"' {
                            self.in_string = false;
                        }
                        continue;
                    }
                    match c {
                        b'"' => self.in_string = true,
                        b'{' | b'[' => self.depth += 1,
                        b'}' | b']' if self.depth > 0 => self.depth -= 1,
                        b',' | b']' if self.depth == 0 => {
                            out.push(trim(buf, self.start..i));
                            if c == b',' {
                                buf[i] = b'\n';
                                self.state = State::Next;
                            } else {
                                self.state = State::Done;
                            }
                        }
                        // An unbalanced `}` stays in the element, which the decoder refuses.
                        _ => {}
                    }
                }
                _ if c.is_ascii_whitespace() => {}
                State::Start if c == b'[' => self.state = State::First,
                State::Start => return Err(format!("it starts with {} instead of `[`", shown(c, &buf[i..]))),
                State::First if c == b']' => self.state = State::Done,
                State::Next if c == b',' || c == b']' => {
                    return Err(format!("an empty element at byte {}", self.consumed + i as u64));
                }
                State::First | State::Next => {
                    self.state = State::Element;
                    self.start = i;
                    self.depth = 0;
                    self.pos = i;
                }
                State::Done => {
                    return Err(format!(
                        "{} after the array's end at byte {}",
                        shown(c, &buf[i..]),
                        self.consumed + i as u64
                    ));
                }
            }
        }
        Ok(())
    }

    /// How much of the buffer was scanned and holds no unfinished element.
    fn cut(&self) -> usize {
        if self.state == State::Element { self.start } else { self.pos }
    }

    /// The buffer lost its first `n` bytes.
    fn shift(&mut self, n: usize) {
        self.pos -= n;
        self.start = self.start.saturating_sub(n);
        self.consumed += n as u64;
    }

    /// The input ended: was the array complete?
    fn finish(&self) -> Result<(), String> {
        match self.state {
            State::Done => Ok(()),
            State::Start => Err("it is empty".into()),
            _ => Err(format!("it ends at byte {} before the array is closed", self.consumed + self.pos as u64)),
        }
    }
}

/// A byte as an error shows it: a character, or `0x..` for what is not printable.
fn shown(c: u8, rest: &[u8]) -> String {
    if c.is_ascii_graphic() {
        format!("`{}`", c as char)
    } else if let Some(ch) = std::str::from_utf8(&rest[..rest.len().min(4)]).ok().and_then(|s| s.chars().next()) {
        format!("`{ch}`")
    } else {
        format!("byte 0x{c:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Elements found by feeding `input` in pieces of `step` bytes, as `read_array` does.
    fn split(input: &str, step: usize) -> Result<Vec<String>, String> {
        let mut s = Splitter::default();
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            let mut spans = Vec::new();
            let scanned = s.scan(&mut buf, &mut spans);
            out.extend(spans.iter().map(|r| String::from_utf8(buf[r.clone()].to_vec()).unwrap()));
            let cut = s.cut();
            // Between the elements of a chunk only whitespace remains.
            assert!(spans.windows(2).all(|w| buf[w[0].end..w[1].start].iter().all(u8::is_ascii_whitespace)));
            buf.drain(..cut);
            s.shift(cut);
            scanned?;
        }
        s.finish()?;
        Ok(out)
    }

    #[test]
    fn elements_are_found_whatever_the_chunking() {
        let input = r#" [ {"a":"x,]}\"y"}, {"b":[1,{"c":"]"}]} ,
            {"d":{}}	,3,"s" ] "#;
        let want = vec![r#"{"a":"x,]}\"y"}"#, r#"{"b":[1,{"c":"]"}]}"#, r#"{"d":{}}"#, "3", r#""s""#];
        for step in 1..input.len() + 1 {
            assert_eq!(split(input, step).unwrap(), want, "step {step}");
        }
        assert_eq!(split("[]", 1).unwrap(), Vec::<String>::new());
        assert_eq!(split(" [ ] \n", 2).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn separators_become_newlines() {
        let mut s = Splitter::default();
        let mut buf = br#"[{"a":1},{"b":2}]"#.to_vec();
        let mut spans = Vec::new();
        s.scan(&mut buf, &mut spans).unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(&buf[spans[0].start..spans[1].end], b"{\"a\":1}\n{\"b\":2}");
    }

    #[test]
    fn shapes_that_are_not_one_array_are_refused_where_found() {
        for (input, says) in [
            ("", "it is empty"),
            ("  \n", "it is empty"),
            (r#"{"a":1}"#, "it starts with `{` instead of `[`"),
            (r#"[{"a":1},,{"b":2}]"#, "an empty element at byte 9"),
            (r#"[{"a":1},]"#, "an empty element at byte 9"),
            (r#"[{"a":1}"#, "it ends at byte 8 before the array is closed"),
            (r#"[{"a":"1}]"#, "it ends at byte 10 before the array is closed"),
            (r#"[{"a":1}] x"#, "`x` after the array's end at byte 10"),
            (r#"[1][2]"#, "`[` after the array's end at byte 3"),
        ] {
            for step in [1, 3, 100] {
                assert_eq!(split(input, step), Err(says.to_string()), "{input:?} in steps of {step}");
            }
        }
        assert_eq!(split("é", 100), Err("it starts with `é` instead of `[`".to_string()));
    }

    #[test]
    fn elements_before_damage_are_found() {
        let mut s = Splitter::default();
        let mut buf = br#"[{"a":1},{"b":2},,"#.to_vec();
        let mut spans = Vec::new();
        assert!(s.scan(&mut buf, &mut spans).is_err());
        assert_eq!(spans.len(), 2);
    }
}
