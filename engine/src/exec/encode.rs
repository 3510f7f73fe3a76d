//! Record batches → one JSON document per event, for sinks.
//!
//! Which encoding a sink edge uses is decided when the flow is compiled, from the stages in
//! front of it: events no `select` touched are written as the bytes that arrived (the fast
//! path, undeclared fields included); `select *, x as y` overlays `y` on those bytes; a `select`
//! without `*` writes exactly its fields.

use super::RAW_COLUMN;
use arrow::array::{Array, ArrayBuilder, AsArray, BinaryArray, BinaryBuilder, BinaryViewArray, RecordBatch};
use arrow::json::writer::LineDelimited;
use arrow::json::{LineDelimitedWriter, WriterBuilder};
use arrow_schema::ArrowError;
use indexmap::IndexMap;
use serde_json::value::RawValue;
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq)]
pub enum Encoder {
    /// The original payload, byte for byte.
    Raw,
    /// The original payload with these declared fields set from the batch.
    Patch(Vec<String>),
    /// Only these declared fields, from the batch.
    Columns(Vec<String>),
}

impl Encoder {
    /// The encoder after a `select`: `star` keeps the input's fields.
    pub fn after_select(&self, star: bool, items: &[String], output_fields: &[String]) -> Encoder {
        match (self, star) {
            (_, false) => Encoder::Columns(output_fields.to_vec()),
            (Encoder::Raw, true) => Encoder::Patch(items.to_vec()),
            (Encoder::Patch(p), true) => {
                let mut p = p.clone();
                p.extend(items.iter().filter(|i| !p.contains(i)).cloned().collect::<Vec<_>>());
                Encoder::Patch(p)
            }
            (Encoder::Columns(_), true) => Encoder::Columns(output_fields.to_vec()),
        }
    }

    pub fn encode(&self, batch: &RecordBatch) -> Result<BinaryArray, ArrowError> {
        let raw = || -> Result<&BinaryViewArray, ArrowError> {
            batch
                .column_by_name(RAW_COLUMN)
                .and_then(|c| c.as_binary_view_opt())
                .ok_or_else(|| ArrowError::SchemaError("batch without raw payloads".into()))
        };
        match self {
            // The one copy of the original bytes on this path: sinks get contiguous payloads.
            Encoder::Raw => {
                let raw = raw()?;
                let mut out = BinaryBuilder::with_capacity(raw.len(), raw.total_bytes_len());
                for i in 0..raw.len() {
                    out.append_value(raw.value(i));
                }
                Ok(out.finish())
            }
            Encoder::Columns(fields) => json_lines(batch, fields),
            Encoder::Patch(fields) => {
                let raw = raw()?;
                let patches = json_lines(batch, fields)?;
                let mut out =
                    BinaryBuilder::with_capacity(raw.len(), raw.total_bytes_len() + patches.value_data().len());
                for i in 0..raw.len() {
                    out.append_value(patch(raw.value(i), patches.value(i))?);
                }
                Ok(out.finish())
            }
        }
    }
}

/// The named columns of `batch`, one JSON object per row.
fn json_lines(batch: &RecordBatch, fields: &[String]) -> Result<BinaryArray, ArrowError> {
    let indices: Vec<usize> = fields.iter().map(|f| batch.schema().index_of(f)).collect::<Result<_, _>>()?;
    let projected = batch.project(&indices)?;
    if let Some(rows) = super::flat::write_rows(&projected) {
        return Ok(rows);
    }
    let mut buf = Vec::with_capacity(projected.num_rows() * 64);
    {
        let mut w: LineDelimitedWriter<&mut Vec<u8>> =
            WriterBuilder::new().with_explicit_nulls(true).build::<_, LineDelimited>(&mut buf);
        w.write(&projected)?;
        w.finish()?;
    }
    // JSON escapes newlines inside strings, so each '\n' ends one row.
    let mut out = BinaryBuilder::with_capacity(projected.num_rows(), buf.len());
    for line in buf.split(|&b| b == b'\n').take(projected.num_rows()) {
        out.append_value(line);
    }
    if out.len() != projected.num_rows() {
        return Err(ArrowError::JsonError("encoded row count differs from the batch".into()));
    }
    Ok(out.finish())
}

/// Set the fields of `patch` (a JSON object) on `raw` (a JSON object). Raw's fields keep their
/// order and their exact text (big numbers, escapes); only the patched values are new.
fn patch(raw: &[u8], patch: &[u8]) -> Result<Vec<u8>, ArrowError> {
    type Fields<'a> = IndexMap<Cow<'a, str>, &'a RawValue>;
    let bad = |e: serde_json::Error| ArrowError::JsonError(e.to_string());
    let mut doc: Fields = serde_json::from_slice(raw).map_err(bad)?;
    let fields: Fields = serde_json::from_slice(patch).map_err(bad)?;
    for (k, v) in fields {
        doc.insert(k, v);
    }
    let mut out = Vec::with_capacity(raw.len() + patch.len());
    out.push(b'{');
    for (i, (k, v)) in doc.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k.as_ref()).map_err(bad)?;
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("tag", DataType::Utf8, true),
            Field::new(RAW_COLUMN, DataType::BinaryView, true),
        ]);
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None])),
            Arc::new(StringArray::from(vec![Some("é\n"), Some("b")])),
            Arc::new(BinaryViewArray::from(vec![&br#"{"z":0, "id":1,"keep":[1]}"#[..], &br#"{"id":null}"#[..]])),
        ];
        RecordBatch::try_new(Arc::new(schema), cols).unwrap()
    }

    fn strings(a: &BinaryArray) -> Vec<String> {
        (0..a.len()).map(|i| String::from_utf8(a.value(i).to_vec()).unwrap()).collect()
    }

    #[test]
    fn raw_is_untouched() {
        assert_eq!(strings(&Encoder::Raw.encode(&batch()).unwrap())[0], r#"{"z":0, "id":1,"keep":[1]}"#);
    }

    #[test]
    fn columns_write_only_declared_fields() {
        let out = Encoder::Columns(vec!["id".into(), "tag".into()]).encode(&batch()).unwrap();
        assert_eq!(strings(&out), vec![r#"{"id":1,"tag":"é\n"}"#, r#"{"id":null,"tag":"b"}"#]);
    }

    #[test]
    fn patch_keeps_order_and_undeclared_fields() {
        let out = Encoder::Patch(vec!["tag".into()]).encode(&batch()).unwrap();
        assert_eq!(strings(&out)[0], r#"{"z":0,"id":1,"keep":[1],"tag":"é\n"}"#);
        let big = patch(br#"{"n": 123456789012345678901234567890, "s": "\u00e9"}"#, br#"{"t":1}"#).unwrap();
        assert_eq!(big, br#"{"n":123456789012345678901234567890,"s":"\u00e9","t":1}"#);
    }
}
