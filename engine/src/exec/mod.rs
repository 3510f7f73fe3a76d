//! The data path: decode raw payloads, run fused operator pipelines over record batches,
//! encode events for sinks, and track acknowledgements.

pub mod ack;
pub mod batch;
pub mod decode;
pub mod encode;
pub mod flat;
pub mod json;
pub mod pipeline;
pub mod trace;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use phoenix_dsl::types::StreamType;
use std::sync::Arc;

/// The hidden last column of every batch: each event's original bytes, so events no `select`
/// reshaped reach sinks untouched (undeclared fields included) without re-encoding. A view
/// array: it points into the buffer the source read, so decoding and filtering copy no payloads.
pub const RAW_COLUMN: &str = "@@raw";

/// The schema of batches on a stream: its declared fields and metadata (in the order the
/// checker typed expressions against) and the raw payload. Every field is nullable at run time;
/// required fields were enforced when decoding.
pub fn runtime_schema(stream: &StreamType) -> SchemaRef {
    let typed = stream.arrow_schema();
    let mut fields: Vec<Field> = typed.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    fields.push(Field::new(RAW_COLUMN, DataType::BinaryView, true));
    Arc::new(Schema::new(fields))
}
