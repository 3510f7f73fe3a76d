//! Fast paths for flat records: schemas whose fields are all strings, ints, floats, bools or
//! timestamps (the common shape of event streams, and the benchmark's).
//!
//! [`FlatDecoder`] reads each payload once, straight into column builders, where arrow-json
//! first builds a tape of the whole batch and then walks it. It accepts only input whose meaning
//! is certain: a JSON object whose declared fields hold values of exactly their type, each once,
//! every required one present, timestamps in plain RFC 3339 UTC (`2026-03-01T10:00:00.5Z`).
//! Anything else (a string where an int is declared, a duplicate key, an offset timestamp, broken
//! JSON) makes it give up on the whole batch, which the general decoder then decodes and
//! explains. So this path never changes what a flow accepts or rejects, only how fast; a
//! differential test holds it to the general decoder's results.
//!
//! [`write_rows`] is the matching encoder: one JSON object per row for flat columns, written
//! byte for byte as arrow-json's writer would (explicit nulls, `lexical` numbers, RFC 3339
//! timestamps with `Z`) but without its per-value formatting machinery.

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanBuilder, Float64Builder, Int64Builder, NullArray, RecordBatch,
    StringArray, TimestampNanosecondBuilder,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, TimeUnit, TimestampNanosecondType};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Str,
    Bool,
    Ts,
}

impl Kind {
    fn of(t: &DataType) -> Option<Kind> {
        Some(match t {
            DataType::Int64 => Kind::Int,
            DataType::Float64 => Kind::Float,
            DataType::Utf8 => Kind::Str,
            DataType::Boolean => Kind::Bool,
            DataType::Timestamp(TimeUnit::Nanosecond, Some(tz)) if tz.as_ref() == "UTC" => Kind::Ts,
            _ => return None,
        })
    }
}

/// Decodes batches of a flat schema, or declines (see the module docs).
#[derive(Debug)]
pub struct FlatDecoder {
    /// The declared schema, with fields nothing reads typed `Null`.
    schema: SchemaRef,
    names: Vec<Box<[u8]>>,
    /// Each name as a JSON key, quotes included (names with characters JSON escapes never
    /// match here and take the general path).
    quoted: Vec<Option<Box<[u8]>>>,
    kinds: Vec<Kind>,
    /// Per field: read by the flow (else validated only, and returned as a `NullArray`).
    reads: Vec<bool>,
    /// Bit `i` set: field `i` is required (not nullable).
    required: u64,
    all: u64,
}

/// Nesting deeper than this in an undeclared field is left to the general decoder.
const MAX_DEPTH: usize = 64;

impl FlatDecoder {
    /// `None` unless every field of `declared` is a flat scalar (and there are at most 64).
    /// `reads[i]` false: field `i` is checked exactly as if it were read, but not built (a
    /// shorter `reads` means the rest are read).
    pub fn new(declared: &SchemaRef, reads: &[bool]) -> Option<FlatDecoder> {
        let fields = declared.fields();
        if fields.is_empty() || fields.len() > 64 {
            return None;
        }
        let mut kinds = Vec::with_capacity(fields.len());
        let mut required = 0u64;
        for (i, f) in fields.iter().enumerate() {
            kinds.push(Kind::of(f.data_type())?);
            if !f.is_nullable() {
                required |= 1 << i;
            }
        }
        let all = if fields.len() == 64 { u64::MAX } else { (1u64 << fields.len()) - 1 };
        let reads: Vec<bool> = (0..fields.len()).map(|i| reads.get(i).copied().unwrap_or(true)).collect();
        Some(FlatDecoder {
            schema: super::pipeline::prune(declared, &reads),
            names: fields.iter().map(|f| f.name().as_bytes().into()).collect(),
            quoted: fields
                .iter()
                .map(|f| {
                    let plain = f.name().bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\');
                    plain.then(|| format!("\"{}\"", f.name()).into_bytes().into())
                })
                .collect(),
            kinds,
            reads,
            required,
            all,
        })
    }

    /// The declared columns for `payloads`, or `None` if any payload needs the general decoder.
    pub fn decode<'a>(&self, payloads: impl ExactSizeIterator<Item = &'a [u8]>) -> Option<RecordBatch> {
        let n = payloads.len();
        let mut cols: Vec<Col> = self
            .kinds
            .iter()
            .zip(&self.reads)
            .map(|(&k, &read)| if read { Col::new(k, n) } else { Col::Skip(k) })
            .collect();
        for p in payloads {
            self.row(p, &mut cols)?;
        }
        let columns: Vec<ArrayRef> = cols.into_iter().map(|c| c.finish(n)).collect::<Option<_>>()?;
        RecordBatch::try_new(self.schema.clone(), columns).ok()
    }

    /// The declared field named `key`; `hint` is tried first (fields tend to come in order).
    fn find(&self, key: &[u8], hint: usize) -> Option<usize> {
        if self.names.get(hint).is_some_and(|n| same(n, key)) {
            return Some(hint);
        }
        self.names.iter().position(|n| same(n, key))
    }

    fn row(&self, p: &[u8], cols: &mut [Col]) -> Option<()> {
        let mut r = Reader { b: p, i: 0 };
        r.ws();
        r.eat(b'{')?;
        r.ws();
        let mut seen = 0u64;
        let mut hint = 0;
        if r.peek() == Some(b'}') {
            r.i += 1;
        } else {
            loop {
                // Fields tend to come in declared order: try the next one's key, quotes
                // included, as a whole before scanning the key byte by byte.
                let field = match self.quoted.get(hint) {
                    Some(Some(q)) if r.b.get(r.i..r.i + q.len()).is_some_and(|k| same(k, q)) => {
                        r.i += q.len();
                        Some(hint)
                    }
                    _ => {
                        let (key, ascii) = r.raw_string()?;
                        let f = self.find(key, hint);
                        // A key equal to a declared name is valid text; any other is checked.
                        if f.is_none() && !ascii {
                            checked(key)?;
                        }
                        f
                    }
                };
                r.ws();
                r.eat(b':')?;
                r.ws();
                match field {
                    Some(f) => {
                        hint = f + 1;
                        let bit = 1u64 << f;
                        if seen & bit != 0 {
                            return None;
                        }
                        seen |= bit;
                        self.value(f, &mut r, &mut cols[f])?;
                    }
                    None => r.skip(0)?,
                }
                r.ws();
                match r.next()? {
                    b',' => r.ws(),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        r.ws();
        if r.i != p.len() || seen & self.required != self.required {
            return None;
        }
        let mut missing = !seen & self.all;
        while missing != 0 {
            let f = missing.trailing_zeros() as usize;
            cols[f].null();
            missing &= missing - 1;
        }
        Some(())
    }

    fn value(&self, f: usize, r: &mut Reader, col: &mut Col) -> Option<()> {
        if r.peek() == Some(b'n') {
            r.literal(b"null")?;
            if self.required & (1 << f) != 0 {
                return None;
            }
            col.null();
            return Some(());
        }
        match col {
            Col::Int(b) => {
                let (s, integer) = r.number()?;
                if !integer {
                    return None;
                }
                b.append_value(lexical_core::parse::<i64>(s).ok()?);
            }
            Col::Float(b) => {
                let (s, _) = r.number()?;
                b.append_value(lexical_core::parse::<f64>(s).ok()?);
            }
            Col::Str(b) => {
                r.string_into(&mut b.values)?;
                b.end(true)?;
            }
            Col::Bool(b) => match r.peek()? {
                b't' => {
                    r.literal(b"true")?;
                    b.append_value(true);
                }
                _ => {
                    r.literal(b"false")?;
                    b.append_value(false);
                }
            },
            Col::Ts(b, day) => b.append_value(parse_utc_with(r.raw_string()?.0, day)?),
            // The same checks as above, keeping nothing.
            Col::Skip(kind) => match kind {
                Kind::Int => {
                    let (s, integer) = r.number()?;
                    if !integer {
                        return None;
                    }
                    lexical_core::parse::<i64>(s).ok()?;
                }
                Kind::Float => {
                    lexical_core::parse::<f64>(r.number()?.0).ok()?;
                }
                Kind::Str => r.skip_string()?,
                Kind::Bool => match r.peek()? {
                    b't' => r.literal(b"true")?,
                    _ => r.literal(b"false")?,
                },
                Kind::Ts => {
                    parse_utc(r.raw_string()?.0)?;
                }
            },
        }
        Some(())
    }
}

enum Col {
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StrCol),
    Bool(BooleanBuilder),
    Ts(TimestampNanosecondBuilder, Day),
    /// A field nothing reads: validated, not built.
    Skip(Kind),
}

impl Col {
    fn new(kind: Kind, n: usize) -> Col {
        match kind {
            Kind::Int => Col::Int(Int64Builder::with_capacity(n)),
            Kind::Float => Col::Float(Float64Builder::with_capacity(n)),
            Kind::Str => Col::Str(StrCol::with_capacity(n)),
            Kind::Bool => Col::Bool(BooleanBuilder::with_capacity(n)),
            Kind::Ts => Col::Ts(TimestampNanosecondBuilder::with_capacity(n), Day::default()),
        }
    }

    fn null(&mut self) {
        match self {
            Col::Int(b) => b.append_null(),
            Col::Float(b) => b.append_null(),
            Col::Str(b) => {
                // Offsets cannot overflow here: the value buffer did not grow.
                let _ = b.end(false);
            }
            Col::Bool(b) => b.append_null(),
            Col::Ts(b, _) => b.append_null(),
            Col::Skip(_) => {}
        }
    }

    /// `None` if a string column is not valid UTF-8 (the general decoder explains it).
    fn finish(self, rows: usize) -> Option<ArrayRef> {
        Some(match self {
            Col::Int(mut b) => Arc::new(b.finish()),
            Col::Float(mut b) => Arc::new(b.finish()),
            Col::Str(b) => b.finish()?,
            Col::Bool(mut b) => Arc::new(b.finish()),
            Col::Ts(mut b, _) => Arc::new(b.finish().with_timezone("UTC")),
            Col::Skip(_) => Arc::new(NullArray::new(rows)),
        })
    }
}

/// A string column built by hand: its text is appended straight from the payloads and checked
/// as UTF-8 once per batch, instead of once per value.
struct StrCol {
    values: Vec<u8>,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl StrCol {
    fn with_capacity(n: usize) -> StrCol {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        StrCol { values: Vec::with_capacity(n * 16), offsets, nulls: NullBufferBuilder::new(n) }
    }

    /// Close the value appended to `values` (empty for a null).
    fn end(&mut self, valid: bool) -> Option<()> {
        self.offsets.push(i32::try_from(self.values.len()).ok()?);
        self.nulls.append(valid);
        Some(())
    }

    fn finish(mut self) -> Option<ArrayRef> {
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        Some(Arc::new(StringArray::try_new(offsets, self.values.into(), self.nulls.finish()).ok()?))
    }
}

/// A cursor over one payload. Every method returns `None` on anything it does not accept.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        let end = self.i + lit.len();
        (self.b.get(self.i..end)? == lit).then(|| self.i = end)
    }

    /// A JSON number: its text and whether it is an integer (no fraction, no exponent).
    fn number(&mut self) -> Option<(&'a [u8], bool)> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            integer = false;
            self.digit()?;
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digit()?;
            self.digits();
        }
        Some((&self.b[start..self.i], integer))
    }

    fn digit(&mut self) -> Option<()> {
        self.next().filter(u8::is_ascii_digit).map(|_| ())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// The bytes of a string without escapes and whether they are printable ASCII (else they
    /// still need checking). A plain loop: these strings are short, too short for memchr.
    fn raw_string(&mut self) -> Option<(&'a [u8], bool)> {
        self.eat(b'"')?;
        let start = self.i;
        // Eight bytes at a time while none of them needs a look (the loop below decides).
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            if needs_look(word(chunk)) {
                break;
            }
            self.i += 8;
        }
        let mut ascii = true;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'"' => {
                    self.i += 1;
                    return Some((&self.b[start..self.i - 1], ascii));
                }
                b'\\' => return None,
                0x20..=0x7f => {}
                _ => ascii = false,
            }
            self.i += 1;
        }
        None
    }

    /// Any JSON string: its text, appended to `out` (unescaped). UTF-8 is checked by the caller.
    fn string_into(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let start = self.i;
        if let Some((s, ascii)) = self.raw_string() {
            if !ascii && s.iter().any(|&c| c < 0x20) {
                return None;
            }
            out.extend_from_slice(s);
            return Some(());
        }
        self.i = start;
        self.eat(b'"')?;
        loop {
            let at = memchr::memchr2(b'"', b'\\', &self.b[self.i..])?;
            self.i += at + 1;
            if self.b[self.i - 1] == b'"' {
                break;
            }
            // Skip the escaped character; serde_json checks the escape itself below.
            self.i += 1;
        }
        let text = serde_json::from_slice::<String>(&self.b[start..self.i]).ok()?;
        out.extend_from_slice(text.as_bytes());
        Some(())
    }

    /// Step over a string, checking it is valid JSON text.
    fn skip_string(&mut self) -> Option<()> {
        let start = self.i;
        if let Some((s, ascii)) = self.raw_string() {
            return if ascii { Some(()) } else { checked(s).map(drop) };
        }
        self.i = start;
        let mut text = Vec::new();
        self.string_into(&mut text)?;
        std::str::from_utf8(&text).ok().map(drop)
    }

    /// Step over one JSON value of an undeclared field, checking that it is valid JSON.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.skip_string(),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            open @ (b'{' | b'[') => {
                self.i += 1;
                let close = if open == b'{' { b'}' } else { b']' };
                self.ws();
                if self.peek() == Some(close) {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    if open == b'{' {
                        self.skip_string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                    }
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        c if c == close => return Some(()),
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }
}

/// Byte equality, a word at a time. Names are short: this beats a call to memcmp.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a, b);
    while x.len() >= 8 {
        let ((xh, xt), (yh, yt)) = (x.split_at(8), y.split_at(8));
        if word(xh) != word(yh) {
            return false;
        }
        (x, y) = (xt, yt);
    }
    x.iter().zip(y).all(|(p, q)| p == q)
}

/// Whether JSON can hold `b` as it is: no `"`, `\\` or control character (checked a word at a
/// time; non-ASCII text needs no escaping).
fn plain(b: &[u8]) -> bool {
    let ok = |c: &u8| *c >= 0x20 && *c != b'"' && *c != b'\\';
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        if needs_look(word(c)) && !c.iter().all(ok) {
            return false;
        }
    }
    chunks.remainder().iter().all(ok)
}

/// Eight bytes as one word (`s` is at least eight long; the rest is ignored).
fn word(s: &[u8]) -> u64 {
    u64::from_le_bytes(s.get(..8).and_then(|w| w.try_into().ok()).unwrap_or([0; 8]))
}

/// Whether any byte of `w` may be `"`, `\`, a control character or not ASCII. Never false
/// when one is (it may be true when none is: the caller then looks byte by byte).
fn needs_look(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (quote | backslash | control | (w & HIGH)) != 0
}

/// `s` as text if it is valid UTF-8 without control characters (JSON forbids them raw).
fn checked(s: &[u8]) -> Option<&str> {
    if s.iter().any(|&c| c < 0x20) {
        return None;
    }
    std::str::from_utf8(s).ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.f…]Z` as nanoseconds since the epoch; `None` for any other form (the
/// general decoder handles offsets, spaces and dates alone) or a time outside the i64 range.
fn parse_utc(s: &[u8]) -> Option<i64> {
    parse_utc_with(s, &mut Day::default())
}

/// The last date [`parse_utc_with`] read: events of one batch mostly share their day.
#[derive(Debug, Default)]
struct Day {
    text: [u8; 10],
    days: Option<i64>,
}

/// [`parse_utc`], reusing `day` when the date is the one read last.
fn parse_utc_with(s: &[u8], day: &mut Day) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        s.get(r)?.iter().try_fold(0i64, |n, &c| {
            let d = c.wrapping_sub(b'0');
            (d < 10).then(|| n * 10 + i64::from(d))
        })
    };
    if s.len() < 20 || s[10] != b'T' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let days = match day.days {
        Some(d) if day.text == s[..10] => d,
        _ => {
            if s[4] != b'-' || s[7] != b'-' {
                return None;
            }
            let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
            if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
                return None;
            }
            let days = days_from_civil(y, m, d);
            day.text.copy_from_slice(&s[..10]);
            day.days = Some(days);
            days
        }
    };
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut nanos = 0i64;
    let mut i = 19;
    if s[i] == b'.' {
        let digits = s[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(i + 1..i + 1 + digits)? * 10i64.pow(9 - digits as u32);
        i += 1 + digits;
    }
    if s.get(i..)? != b"Z" {
        return None;
    }
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// One column of a flat batch, typed once instead of per value.
enum Values<'a> {
    Int(&'a [i64]),
    Float(&'a [f64]),
    Str(&'a arrow::array::StringArray),
    Bool(&'a arrow::array::BooleanArray),
    Ts(&'a [i64], Date),
}

/// One JSON object per row of `batch` (every column), or `None` if a column is not flat.
pub fn write_rows(batch: &RecordBatch) -> Option<BinaryArray> {
    let schema = batch.schema();
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (i, (f, col)) in schema.fields().iter().zip(batch.columns()).enumerate() {
        let values = match Kind::of(f.data_type())? {
            Kind::Int => Values::Int(col.as_primitive::<Int64Type>().values()),
            Kind::Float => Values::Float(col.as_primitive::<Float64Type>().values()),
            Kind::Str => Values::Str(col.as_string::<i32>()),
            Kind::Bool => Values::Bool(col.as_boolean()),
            Kind::Ts => Values::Ts(col.as_primitive::<TimestampNanosecondType>().values(), Date::default()),
        };
        let mut key = vec![if i == 0 { b'{' } else { b',' }];
        serde_json::to_writer(&mut key, f.name()).ok()?;
        key.push(b':');
        columns.push((key, col.logical_nulls(), values));
    }
    let rows = batch.num_rows();
    let mut out: Vec<u8> = Vec::with_capacity(rows * (16 + 12 * batch.num_columns()));
    let mut offsets: Vec<i32> = Vec::with_capacity(rows + 1);
    offsets.push(0);
    let mut num = [0u8; lexical_core::BUFFER_SIZE];
    for row in 0..rows {
        if columns.is_empty() {
            out.push(b'{');
        }
        for (key, nulls, values) in &mut columns {
            out.extend_from_slice(key);
            if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                out.extend_from_slice(b"null");
                continue;
            }
            match values {
                Values::Int(v) => out.extend_from_slice(lexical_core::write(v[row], &mut num)),
                Values::Float(v) if v[row].is_finite() => out.extend_from_slice(lexical_core::write(v[row], &mut num)),
                Values::Float(_) => out.extend_from_slice(b"null"),
                Values::Str(a) => write_str(a.value(row), &mut out),
                Values::Bool(a) => out.extend_from_slice(if a.value(row) { b"true" } else { b"false" }),
                Values::Ts(v, date) => write_utc_with(v[row], &mut out, date),
            }
        }
        out.push(b'}');
        offsets.push(i32::try_from(out.len()).ok()?);
    }
    BinaryArray::try_new(OffsetBuffer::new(ScalarBuffer::from(offsets)), out.into(), None).ok()
}

/// A JSON string as serde_json writes it; text that needs no escaping is copied as it is.
fn write_str(s: &str, out: &mut Vec<u8>) {
    if plain(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Nanoseconds since the epoch as a quoted RFC 3339 UTC timestamp, as chrono's
/// `to_rfc3339_opts(SecondsFormat::AutoSi, true)` writes it (what arrow-json's writer uses):
/// no fraction, or 3, 6 or 9 digits.
#[cfg(test)]
fn write_utc(ns: i64, out: &mut Vec<u8>) {
    write_utc_with(ns, out, &mut Date::default());
}

/// The date part of the last timestamp [`write_utc_with`] wrote: rows of a batch mostly share
/// their day.
#[derive(Debug, Default)]
struct Date {
    day: Option<i64>,
    text: Vec<u8>,
}

/// [`write_utc`], reusing `date` when the day is the one written last.
fn write_utc_with(ns: i64, out: &mut Vec<u8>, date: &mut Date) {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let day = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let two = |out: &mut Vec<u8>, v: i64| out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
    if date.day != Some(day) {
        let (y, m, d) = civil_from_days(day);
        let text = &mut date.text;
        text.clear();
        if (0..=9999).contains(&y) {
            two(text, y / 100);
            two(text, y % 100);
        } else {
            // i64 nanoseconds reach only 1677..2262; keep chrono's form for completeness.
            text.extend_from_slice(format!("{y:+05}").as_bytes());
        }
        text.push(b'-');
        two(text, m);
        text.push(b'-');
        two(text, d);
        date.day = Some(day);
    }
    out.push(b'"');
    out.extend_from_slice(&date.text);
    out.push(b'T');
    two(out, tod / 3600);
    out.push(b':');
    two(out, tod / 60 % 60);
    out.push(b':');
    two(out, tod % 60);
    let (value, digits) = match frac {
        0 => (0, 0),
        f if f % 1_000_000 == 0 => (f / 1_000_000, 3),
        f if f % 1_000 == 0 => (f / 1_000, 6),
        f => (f, 9),
    };
    if digits > 0 {
        out.push(b'.');
        let start = out.len();
        out.resize(start + digits, b'0');
        let mut v = value;
        for k in (start..start + digits).rev() {
            out[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    out.extend_from_slice(b"Z\"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use arrow::json::ReaderBuilder;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), true),
        ]))
    }

    /// What arrow-json makes of one payload: `None` if it rejects it.
    fn general(schema: &SchemaRef, payload: impl AsRef<[u8]>) -> Option<RecordBatch> {
        let mut d = ReaderBuilder::new(schema.clone()).with_strict_mode(false).build_decoder().ok()?;
        d.decode(payload.as_ref()).ok()?;
        d.flush().ok()?
    }

    #[test]
    fn agrees_with_arrow_json_whenever_it_answers() {
        let schema = schema();
        let flat = FlatDecoder::new(&schema, &[]).unwrap();
        let cases = [
            r#"{"id":1,"name":"a","amount":1.5,"ok":true,"ts":"2026-03-01T10:00:00Z"}"#,
            r#" { "id" : -0 , "amount" : 1e3 , "ok" : false } "#,
            r#"{"id":9223372036854775807,"amount":-12.25e-3,"ts":"2024-02-29T23:59:59.123456789Z"}"#,
            r#"{"id":9223372036854775808}"#,
            r#"{"id":1.0}"#,
            r#"{"id":"1"}"#,
            r#"{"id":1,"name":"\u00e9t\u00e9 \"q\" \n"}"#,
            r#"{"id":1,"name":"日本語","extra":{"a":[1,2,{"b":null}],"c":"\\"}}"#,
            r#"{"id":1,"extra":[1,2}"#,
            r#"{"id":1,"id":2}"#,
            r#"{"name":"no id"}"#,
            r#"{"id":null}"#,
            r#"{"id":1,"amount":null,"ts":null}"#,
            r#"{"id":1,"ts":"2026-02-30T00:00:00Z"}"#,
            r#"{"id":1,"ts":"2026-03-01T10:00:00+01:00"}"#,
            r#"{"id":1,"ts":"2026-03-01T10:00:00.5Z"}"#,
            r#"{"id":1,"amount":01}"#,
            r#"{"id":1,"amount":1.}"#,
            r#"{"id":1,"ok":"true"}"#,
            r#"{"id":1} {"id":2}"#,
            r#"[{"id":1}]"#,
            r#"{"id":1,}"#,
            r#"{"id":1,"x":tru}"#,
            r#"{}"#,
            "{\"id\":1,\"name\":\"tab\there\"}",
            // Special bytes past the first eight, where strings are scanned a word at a time.
            r#"{"id":1,"name":"abcdefghij\u00e9","abcdefghijklmnop":"abcdefghijklmnopq\"r"}"#,
            r#"{"id":1,"name":"abcdefghij日本語"}"#,
            "{\"id\":1,\"name\":\"abcdefghijk\tl\"}",
            "{\"id\":1,\"abcdefghijk\tl\":2}",
            r#"{"id":1,"name":"abcdefgh"}"#,
            "{\"id\":1,\"x\":\"tab\there\"}",
        ];
        let bytes: [&[u8]; 4] = [
            b"{\"id\":1,\"name\":\"\xff\"}",
            b"{\"id\":1,\"x\":\"\xc3\"}",
            b"{\"id\":1,\"\xe2\x82\":2}",
            "{\"id\":1,\"name\":\"\u{e9}\u{1F525}\"}".as_bytes(),
        ];
        // Fields the flow does not read are validated all the same: skipping any of them
        // never changes what is accepted, nor the fields that are built.
        let masks: Vec<Vec<bool>> = (0..5).map(|skip| (0..5).map(|i| i != skip).collect()).collect();
        let skipping: Vec<FlatDecoder> = masks.iter().map(|m| FlatDecoder::new(&schema, m).unwrap()).collect();
        let mut answered = 0;
        for case in cases.iter().map(|c| c.as_bytes()).chain(bytes) {
            let ours = flat.decode(std::iter::once(case));
            for (mask, d) in masks.iter().zip(&skipping) {
                let partial = d.decode(std::iter::once(case));
                assert_eq!(partial.is_some(), ours.is_some(), "{mask:?} {}", String::from_utf8_lossy(case));
                if let (Some(p), Some(o)) = (&partial, &ours) {
                    for (i, &read) in mask.iter().enumerate() {
                        if read {
                            assert_eq!(p.column(i), o.column(i));
                        } else {
                            assert_eq!(p.column(i).data_type(), &DataType::Null);
                        }
                    }
                }
            }
            let theirs = general(&schema, case).filter(|b| b.num_rows() == 1);
            if let Some(ours) = ours {
                answered += 1;
                assert_eq!(Some(ours), theirs, "{}", String::from_utf8_lossy(case));
            }
        }
        assert!(answered >= 7, "the fast path should take the plain cases, took {answered}");
    }

    #[test]
    fn batches_agree_with_arrow_json_across_rows() {
        // Several rows per batch: the field-order guess and the remembered date carry from one
        // row to the next and must never change an answer.
        let schema = schema();
        let flat = FlatDecoder::new(&schema, &[]).unwrap();
        let rows = [
            r#"{"id":1,"name":"a","ts":"2026-03-01T10:00:00Z"}"#,
            r#"{"ts":"2026-03-01T23:59:59.5Z","id":2}"#,
            r#"{"id":3,"ts":"2026-03-02T00:00:00Z","name":"c"}"#,
            r#"{"name":"d","id":4,"ok":true,"ts":"2026-03-01T00:00:01Z"}"#,
            r#"{"id":5,"x":{"id":9},"ts":"2024-02-29T12:00:00Z"}"#,
        ];
        let ours = flat.decode(rows.iter().map(|r| r.as_bytes())).unwrap();
        assert_eq!(Some(ours), general(&schema, rows.join("\n")));
        let bad = [r#"{"id":1,"ts":"2026-03-01T10:00:00Z"}"#, r#"{"id":2,"ts":"2026-03-01T24:00:00Z"}"#];
        assert!(flat.decode(bad.iter().map(|r| r.as_bytes())).is_none());
    }

    #[test]
    fn needs_look_never_misses_a_special_byte() {
        for special in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xff, 0xc3] {
            for at in 0..8 {
                let mut w = *b"abcdefgh";
                w[at] = special;
                assert!(needs_look(u64::from_le_bytes(w)), "{special:#x} at {at}");
            }
        }
        assert!(!needs_look(u64::from_le_bytes(*b"plain ~ ")));
        for (text, want) in [
            ("", true),
            ("short", true),
            ("exactly8", true),
            ("a longer plain text, é and 日本", true),
            ("a longer text with a \" quote", false),
            ("a longer text with a \\ backslash", false),
            ("a longer text with a \n newline", false),
            ("tail\u{1f}", false),
        ] {
            assert_eq!(plain(text.as_bytes()), want, "{text:?}");
        }
        assert!(same(b"\"country\"", b"\"country\""));
        assert!(!same(b"\"country\"", b"\"countrx\""));
        assert!(!same(b"\"countr\"", b"\"country\""));
    }

    #[test]
    fn declines_nested_schemas() {
        let s = Arc::new(Schema::new(vec![Field::new(
            "l",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            true,
        )]));
        assert!(FlatDecoder::new(&s, &[]).is_none());
    }

    #[test]
    fn timestamps_round_trip_like_chrono() {
        use chrono::{DateTime, SecondsFormat};
        for ns in [
            0i64,
            1,
            999,
            1_000,
            1_000_000,
            123_456_789,
            -1,
            -1_000_000_001,
            1_772_359_200_500_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            write_utc(ns, &mut out);
            let want =
                format!("\"{}\"", DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::AutoSi, true));
            assert_eq!(String::from_utf8(out).unwrap(), want, "{ns}");
            if (0..=i64::MAX / 2).contains(&ns) {
                let text = want.trim_matches('"');
                assert_eq!(parse_utc(text.as_bytes()), Some(ns), "{text}");
            }
        }
    }

    #[test]
    fn rows_match_arrow_json_writer() {
        let schema = schema();
        let payloads = [
            r#"{"id":1,"name":"é\"\n","amount":119.00000000000001,"ok":true,"ts":"2026-03-01T10:00:00.120Z"}"#,
            r#"{"id":-5,"amount":1e300}"#,
            r#"{"id":7,"amount":0.1,"ts":"1970-01-01T00:00:00Z"}"#,
            r#"{"id":8,"ts":"1970-01-01T23:59:59.999Z"}"#,
            r#"{"id":9,"ts":"2026-03-01T00:00:00Z"}"#,
            r#"{"id":10,"ts":"1969-12-31T23:59:59Z"}"#,
        ];
        let batch = general(&schema, payloads.join("\n")).unwrap();
        let ours = write_rows(&batch).unwrap();
        let mut theirs = Vec::new();
        {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(&mut theirs);
            w.write(&batch).unwrap();
            w.finish().unwrap();
        }
        let theirs: Vec<&[u8]> = theirs.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        let ours: Vec<&[u8]> = (0..ours.len()).map(|i| ours.value(i)).collect();
        assert_eq!(ours, theirs);
    }
}
