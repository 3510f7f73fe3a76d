//! Raw payloads → Arrow record batches against the declared schema.
//!
//! A batch of a flat schema is decoded by the one-pass fast path ([`FlatDecoder`]), which only
//! accepts valid events. Otherwise every payload is first checked to be a valid event
//! ([`check_event`]: strict RFC 8259, one pass, nothing built), then the valid ones are decoded
//! by arrow-json in one pass per run of them. Only when that fails is a run bisected to find the
//! payloads that do not fit the schema, so a clean batch costs one decode and a batch with `k`
//! such lines about `k·log n` small ones. Bad payloads become dead letters with the reason.

use super::batch::{DeadLetter, RawBatch};
use super::flat::FlatDecoder;
use super::json::{Keys, Shape, check_event};
use super::pipeline::prune;
use super::{RAW_COLUMN, runtime_schema};
use arrow::array::{
    Array, ArrayRef, BinaryViewBuilder, Int64Array, NullArray, RecordBatch, UInt32Array, new_null_array,
};
use arrow::buffer::Buffer;
use arrow::compute::{concat_batches, take};
use arrow::json::ReaderBuilder;
use arrow_schema::{Schema, SchemaRef};
use phoenix_dsl::types::{Record, StreamType, Ty};
use std::ops::Range;
use std::sync::Arc;

#[derive(Debug)]
pub struct Decoder {
    /// The declared fields only: what the JSON decoder fills.
    declared: SchemaRef,
    /// Declared fields, metadata columns, raw payload: what operators see.
    schema: SchemaRef,
    /// Metadata names in column order.
    meta: Vec<String>,
    /// Names the source in dead letters.
    node: String,
    /// The declared record, to explain failures in its terms.
    record: Arc<Record>,
    /// The one-pass decoder, when every declared field is a scalar.
    flat: Option<FlatDecoder>,
    /// The declared numbers the validator holds to exact conversion.
    shape: Shape,
    /// Per column of `schema`: whether the flow reads it. Unread declared fields are still
    /// validated; unread columns travel as `NullArray`s.
    reads: Vec<bool>,
}

impl Decoder {
    /// `reads`: per column of the stream's runtime schema, whether the flow reads it (see
    /// [`crate::exec::pipeline::Pipeline::reads`]); shorter means "read".
    pub fn new(stream: &StreamType, node: &str, reads: &[bool]) -> Decoder {
        let declared = Arc::new(Schema::new(stream.record.arrow_fields()));
        let full = runtime_schema(stream);
        let reads: Vec<bool> = (0..full.fields().len()).map(|i| reads.get(i).copied().unwrap_or(true)).collect();
        Decoder {
            flat: FlatDecoder::new(&declared, &reads[..declared.fields().len()]),
            declared,
            schema: prune(&full, &reads),
            meta: stream.metadata.fields.iter().map(|f| f.name.clone()).collect(),
            node: node.to_string(),
            shape: Shape::of(&stream.record),
            record: stream.record.clone(),
            reads,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The metadata the flow reads (names without `@`): sources need not fill the rest.
    pub fn metadata_read(&self) -> Vec<String> {
        let at = self.declared.fields().len();
        self.meta.iter().enumerate().filter(|(i, _)| self.reads[at + i]).map(|(_, m)| m.clone()).collect()
    }

    /// Declared fields and metadata nothing reads (validated, not carried), for `explain`.
    pub fn unread(&self) -> Vec<String> {
        self.schema.fields().iter().zip(&self.reads).filter(|(_, r)| !**r).map(|(f, _)| f.name().clone()).collect()
    }

    /// Decode every payload; those that are not JSON or do not fit the schema come back as
    /// dead letters, in order.
    pub fn decode(&self, raw: &RawBatch) -> (Option<RecordBatch>, Vec<DeadLetter>) {
        let n = raw.len();
        let mut dead: Vec<DeadLetter> = raw
            .rejected
            .iter()
            .map(|(payload, error)| DeadLetter {
                error: error.clone(),
                node: self.node.clone(),
                payload: payload.clone(),
                attempts: 1,
            })
            .collect();
        if n == 0 {
            return (None, dead);
        }
        if let Some(declared) = self.flat.as_ref().and_then(|f| f.decode((0..n).map(|i| raw.payload(i)))) {
            return self.finish(raw, declared, None, dead);
        }
        // The general path. First what is not a valid event at all, with where and why
        // (arrow-json's tape decoder would let some of it through).
        let mut keys = Keys::default();
        let mut bad: Vec<(usize, String)> = Vec::new();
        let mut valid: Vec<usize> = Vec::with_capacity(n);
        for i in 0..n {
            match check_event(raw.payload(i), &mut keys, &self.shape) {
                Ok(()) => valid.push(i),
                Err(e) => bad.push((i, e.reason(raw.payload(i)))),
            }
        }
        let kept: Vec<u32> = valid.iter().map(|&i| i as u32).collect();
        // Without the invalid ones, the rest may well suit the fast path after all.
        if !bad.is_empty()
            && !valid.is_empty()
            && let Some(declared) = self.flat.as_ref().and_then(|f| f.decode(valid.iter().map(|&i| raw.payload(i))))
        {
            dead.extend(bad.into_iter().map(|(i, error)| self.dead(raw, i, error)));
            return self.finish(raw, declared, Some(&kept), dead);
        }
        // arrow-json decodes runs of valid payloads (a run is contiguous in the buffer) and
        // finds the ones that do not fit the schema by bisection.
        let mut good: Vec<(Range<usize>, RecordBatch)> = Vec::new();
        let mut at = 0;
        while at < valid.len() {
            let run = valid[at..].iter().enumerate().take_while(|(k, i)| **i == valid[at] + k).count();
            self.bisect(raw, valid[at]..valid[at] + run, &mut good, &mut bad);
            at += run;
        }
        bad.sort_unstable_by_key(|(i, _)| *i);
        dead.extend(bad.into_iter().map(|(i, error)| self.dead(raw, i, error)));
        if good.is_empty() {
            return (None, dead);
        }
        let kept: Option<Vec<u32>> = match good.as_slice() {
            [(r, _)] if r.len() == n => None,
            _ => Some(good.iter().flat_map(|(r, _)| r.clone()).map(|i| i as u32).collect()),
        };
        let declared = if good.len() == 1 {
            good.pop().map(|(_, b)| b).unwrap_or_else(|| RecordBatch::new_empty(self.declared.clone()))
        } else {
            let parts: Vec<RecordBatch> = good.into_iter().map(|(_, b)| b).collect();
            match concat_batches(&self.declared, &parts) {
                Ok(b) => b,
                Err(e) => {
                    dead.extend(self.all_dead(raw, &format!("internal: {e}")));
                    return (None, dead);
                }
            }
        };
        self.finish(raw, declared, kept.as_deref(), dead)
    }

    /// The batch of the rows in `kept` (all when `None`), after the dead letters so far.
    fn finish(
        &self,
        raw: &RawBatch,
        declared: RecordBatch,
        kept: Option<&[u32]>,
        mut dead: Vec<DeadLetter>,
    ) -> (Option<RecordBatch>, Vec<DeadLetter>) {
        match self.assemble(raw, declared, kept) {
            Ok(b) => (Some(b), dead),
            Err(e) => {
                dead.extend(self.all_dead(raw, &format!("internal: {e}")));
                (None, dead)
            }
        }
    }

    /// Event `i` as a dead letter (the source learns why, if it asked to).
    fn dead(&self, raw: &RawBatch, i: usize, error: String) -> DeadLetter {
        raw.ack.reject(i, &error);
        let error = match &raw.place {
            Some(p) => format!("{}: {error}", p.describe(i)),
            None => error,
        };
        DeadLetter { error, node: self.node.clone(), payload: raw.data.slice(raw.spans[i].clone()), attempts: 1 }
    }

    fn all_dead(&self, raw: &RawBatch, error: &str) -> Vec<DeadLetter> {
        (0..raw.len()).map(|i| self.dead(raw, i, error.to_string())).collect()
    }

    fn bisect(
        &self,
        raw: &RawBatch,
        range: Range<usize>,
        good: &mut Vec<(Range<usize>, RecordBatch)>,
        bad: &mut Vec<(usize, String)>,
    ) {
        match self.try_decode(raw, range.clone()) {
            Ok(b) => good.push((range, b)),
            Err(e) if range.len() == 1 => bad.push((range.start, explain(raw.payload(range.start), &self.record, e))),
            Err(_) => {
                let mid = range.start + range.len() / 2;
                self.bisect(raw, range.start..mid, good, bad);
                self.bisect(raw, mid..range.end, good, bad);
            }
        }
    }

    fn try_decode(&self, raw: &RawBatch, range: Range<usize>) -> Result<RecordBatch, String> {
        let want = range.len();
        let bytes = &raw.data[raw.spans[range.start].start..raw.spans[range.end - 1].end];
        // One row of headroom: a line holding two values shows up as too many rows.
        let mut decoder = ReaderBuilder::new(self.declared.clone())
            .with_batch_size(want + 1)
            .with_strict_mode(false)
            .build_decoder()
            .map_err(|e| e.to_string())?;
        let mut offset = 0;
        while offset < bytes.len() {
            let read = decoder.decode(&bytes[offset..]).map_err(clean)?;
            if read == 0 {
                break;
            }
            offset += read;
        }
        let batch = decoder.flush().map_err(clean)?.unwrap_or_else(|| RecordBatch::new_empty(self.declared.clone()));
        match batch.num_rows() {
            n if n == want => Ok(batch),
            0 if want == 1 => Err("empty payload: expected a JSON object".into()),
            _ if want == 1 => Err("more than one JSON value in one payload".into()),
            n => Err(format!("{n} values for {want} payloads")),
        }
    }

    /// Declared columns + metadata + raw payloads, for the rows in `kept` (all when `None`).
    fn assemble(&self, raw: &RawBatch, declared: RecordBatch, kept: Option<&[u32]>) -> Result<RecordBatch, String> {
        let rows: Box<dyn Iterator<Item = usize>> = match kept {
            Some(k) => Box::new(k.iter().map(|&i| i as usize)),
            None => Box::new(0..raw.len()),
        };
        let rows_out = declared.num_rows();
        let at = declared.num_columns();
        let size_read = self.meta.iter().enumerate().any(|(i, m)| m == "size" && self.reads[at + i]);
        let mut sizes = Vec::with_capacity(if size_read { rows_out } else { 0 });
        let mut payloads = BinaryViewBuilder::with_capacity(rows_out);
        // Views into the source's buffer (views address it with u32 offsets).
        let block =
            (raw.data.len() <= u32::MAX as usize).then(|| payloads.append_block(Buffer::from(raw.data.clone())));
        for i in rows {
            let span = &raw.spans[i];
            if size_read {
                sizes.push(span.len() as i64);
            }
            match block {
                Some(b) => {
                    payloads.try_append_view(b, span.start as u32, span.len() as u32).map_err(|e| e.to_string())?
                }
                None => payloads.append_value(&raw.data[span.clone()]),
            }
        }
        let take_rows = |a: &ArrayRef| -> Result<ArrayRef, String> {
            match kept {
                None => Ok(a.clone()),
                Some(k) => take(a.as_ref(), &UInt32Array::from(k.to_vec()), None).map_err(|e| e.to_string()),
            }
        };
        let unread = || Arc::new(NullArray::new(rows_out)) as ArrayRef;
        let mut columns: Vec<ArrayRef> =
            declared.columns().iter().zip(&self.reads).map(|(c, &r)| if r { c.clone() } else { unread() }).collect();
        for (i, name) in self.meta.iter().enumerate() {
            let field = self.schema.field(at + i);
            let column = if !self.reads[at + i] {
                unread()
            } else if name == "size" {
                Arc::new(Int64Array::from(std::mem::take(&mut sizes))) as ArrayRef
            } else {
                match raw.meta.iter().find(|(n, _)| n == name) {
                    Some((_, a)) if a.len() == raw.len() => take_rows(a)?,
                    _ => new_null_array(field.data_type(), declared.num_rows()),
                }
            };
            columns.push(column);
        }
        columns.push(Arc::new(payloads.finish()));
        debug_assert_eq!(self.schema.fields().last().map(|f| f.name().as_str()), Some(RAW_COLUMN));
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| e.to_string())
    }
}

/// Why one payload failed, in the flow's terms: not JSON, not an object, a required field
/// missing; otherwise the decoder's own message (a value of the wrong type).
fn explain(payload: &[u8], record: &Record, decoder_error: String) -> String {
    use serde_json::Value;
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return format!("not valid JSON: {e}"),
    };
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let Value::Object(_) = &v else {
        return format!("expected a JSON object, got {}", kind(&v));
    };
    fn missing(v: &Value, record: &Record, path: &str) -> Option<String> {
        for f in &record.fields {
            let name = if path.is_empty() { f.name.clone() } else { format!("{path}.{}", f.name) };
            match v.get(&f.name) {
                None if !f.optional => return Some(format!("missing required field `{name}`")),
                Some(Value::Null) if !f.optional => return Some(format!("required field `{name}` is null")),
                Some(inner @ Value::Object(_)) => {
                    if let Ty::Record(r) = &f.ty
                        && let Some(m) = missing(inner, r, &name)
                    {
                        return Some(m);
                    }
                }
                _ => {}
            }
        }
        None
    }
    missing(&v, record, "").unwrap_or(decoder_error)
}

/// arrow-json's messages start with "Json error: "; the dead letter says where already.
fn clean(e: arrow_schema::ArrowError) -> String {
    let s = e.to_string();
    s.strip_prefix("Json error: ").unwrap_or(&s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::ack::Ack;
    use crate::exec::batch::RawBatchBuilder;
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use phoenix_dsl::types::{Record, RecordField, Ty};

    fn stream() -> StreamType {
        let f = |name: &str, ty: Ty, optional: bool| RecordField { name: name.into(), ty, optional };
        StreamType {
            record: Arc::new(Record { fields: vec![f("id", Ty::Int, false), f("name", Ty::String, true)] }),
            open: true,
            metadata: Arc::new(Record { fields: vec![f("size", Ty::Int, false)] }),
        }
    }

    fn decode(lines: &[&str]) -> (Option<RecordBatch>, Vec<DeadLetter>) {
        let mut b = RawBatchBuilder::default();
        for l in lines {
            b.push(l.as_bytes());
        }
        Decoder::new(&stream(), "source s", &[]).decode(&b.finish(Vec::new(), Ack::none()))
    }

    #[test]
    fn clean_batch_decodes_in_one_pass() {
        let (b, dead) = decode(&[r#"{"id": 1, "name": "a", "extra": [1]}"#, r#"{"id": 2}"#]);
        let b = b.unwrap();
        assert!(dead.is_empty());
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[1, 2]);
        // @size is the payload length.
        assert_eq!(b.column(2).as_primitive::<Int64Type>().value(1), 9);
        assert_eq!(b.column(3).as_binary_view().value(1), br#"{"id": 2}"#);
    }

    #[test]
    fn bad_lines_become_dead_letters_in_order() {
        let lines = [
            r#"{"id": 1}"#,
            r#"{"id": "#,
            r#"{"id": "x"}"#,
            r#"{"name": "no id"}"#,
            r#"[1, 2]"#,
            r#"{"id": 1} {"id": 2}"#,
            r#"{"id": 99999999999999999999}"#,
            r#"{"id": 7}"#,
        ];
        let (b, dead) = decode(&lines);
        let b = b.unwrap();
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[1, 7]);
        let payloads: Vec<&[u8]> = dead.iter().map(|d| d.payload.as_ref()).collect();
        assert_eq!(payloads, lines[1..7].iter().map(|l| l.as_bytes()).collect::<Vec<_>>());
        for d in &dead {
            assert!(!d.error.is_empty(), "{d:?}");
        }
    }
}
