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

use super::json::{Cursor, Keys, needs_look, same, word};
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
        let mut keys = Keys::default();
        for p in payloads {
            self.row(p, &mut cols, &mut keys)?;
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

    fn row(&self, p: &[u8], cols: &mut [Col], keys: &mut Keys) -> Option<()> {
        let mut r = Cursor::new(p);
        keys.reset();
        r.ws();
        r.eat(b'{').ok()?;
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
                        if r.peek() != Some(b'"') {
                            return None;
                        }
                        let at = r.i;
                        let key = r.string(true).ok()?;
                        // An escaped key may spell a declared name: the general path decides.
                        if key.escaped {
                            return None;
                        }
                        let f = self.find(key.text, hint);
                        // Undeclared keys may not repeat either (declared ones are `seen`).
                        if f.is_none() {
                            keys.insert(p, 0, at, key).ok()?;
                        }
                        f
                    }
                };
                r.ws();
                r.eat(b':').ok()?;
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
                    None => r.value(keys, 1).ok()?,
                }
                r.ws();
                if r.comma_or(b'}').ok()? {
                    break;
                }
            }
        }
        r.ws();
        // `close` checks the undeclared keys of a large object (small ones were checked above).
        if r.end().is_err() || seen & self.required != self.required || keys.close(p, 0).is_err() {
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

    /// The value of declared field `f`, checked against its type (and, when read, kept).
    /// Anything else declines: a value of another type may still be accepted by the general
    /// decoder's rules, and it explains what is not.
    fn value(&self, f: usize, r: &mut Cursor, col: &mut Col) -> Option<()> {
        if r.peek() == Some(b'n') {
            r.literal().ok()?;
            if self.required & (1 << f) != 0 {
                return None;
            }
            col.null();
            return Some(());
        }
        match col.kind() {
            Kind::Int => {
                let (s, integer) = r.number().ok()?;
                if !integer {
                    return None;
                }
                let v = lexical_core::parse::<i64>(s).ok()?;
                if let Col::Int(b) = col {
                    b.append_value(v);
                }
            }
            Kind::Float => {
                if !matches!(r.peek(), Some(b'-' | b'0'..=b'9')) {
                    return None;
                }
                let v = lexical_core::parse::<f64>(r.number().ok()?.0).ok()?;
                if let Col::Float(b) = col {
                    b.append_value(v);
                }
            }
            Kind::Str => {
                if r.peek() != Some(b'"') {
                    return None;
                }
                match col {
                    // UTF-8 is checked once for the whole column.
                    Col::Str(b) => {
                        let s = r.string(false).ok()?;
                        if s.escaped {
                            let start = r.i - s.text.len() - 2;
                            let text = serde_json::from_slice::<String>(&r.b[start..r.i]).ok()?;
                            b.values.extend_from_slice(text.as_bytes());
                        } else {
                            b.values.extend_from_slice(s.text);
                        }
                        b.end(true)?;
                    }
                    _ => {
                        r.string(true).ok()?;
                    }
                }
            }
            Kind::Bool => {
                if !matches!(r.peek(), Some(b't' | b'f')) {
                    return None;
                }
                let v = r.literal().ok()??;
                if let Col::Bool(b) = col {
                    b.append_value(v);
                }
            }
            Kind::Ts => {
                if r.peek() != Some(b'"') {
                    return None;
                }
                let s = r.string(false).ok()?;
                if s.escaped {
                    return None;
                }
                match col {
                    Col::Ts(b, day) => b.append_value(parse_utc_with(s.text, day)?),
                    _ => {
                        parse_utc(s.text)?;
                    }
                }
            }
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

    fn kind(&self) -> Kind {
        match self {
            Col::Int(_) => Kind::Int,
            Col::Float(_) => Kind::Float,
            Col::Str(_) => Kind::Str,
            Col::Bool(_) => Kind::Bool,
            Col::Ts(..) => Kind::Ts,
            Col::Skip(k) => *k,
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
            // Valid for arrow-json, not events (see `json`): the fast path must decline them.
            r#"{"id":1,"x":1,"x":2}"#,
            r#"{"id":1,"x":{"a":1,"a":2}}"#,
            r#"{"id":1,"amount":1e400}"#,
            r#"{"id":1,"x":-1e400}"#,
            r#"{"id":1,"name":"\ud800"}"#,
            r#"{"id":1,"x":"\udc00"}"#,
            r#"{"id":1,"x":1 "y":2}"#,
            r#"{"id":1,,"x":2}"#,
            // A repeat among many undeclared keys, past those checked one by one.
            r#"{"id":1,"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1,"j":1,"k":1,"l":1,"m":1,"n":1,"o":1,"p":1,"q":1,"a":2}"#,
            r#"{"id":1,"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1,"j":1,"k":1,"l":1,"m":1,"n":1,"o":1,"p":1,"q":1,"r":2}"#,
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
            let valid = super::super::json::check_event(case, &mut Keys::default(), &Default::default());
            assert!(ours.is_none() || valid.is_ok(), "{valid:?}: {}", String::from_utf8_lossy(case));
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
