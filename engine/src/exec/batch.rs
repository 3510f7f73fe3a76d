//! What travels between tasks: raw payloads from sources, encoded events to sinks.

use super::ack::Ack;
use arrow::array::{Array, ArrayRef, BinaryArray};
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;

/// Payloads as a source received them, not yet decoded. Decoding happens on the workers, so
/// a source task only does I/O.
#[derive(Debug, Clone)]
pub struct RawBatch {
    /// The payloads, separated by whitespace only (newlines), so a run of them is valid NDJSON.
    pub data: Bytes,
    /// Each event's payload in `data`, in order.
    pub spans: Vec<Range<usize>>,
    /// Connector metadata by name (without `@`), one value per event. `size` is filled by the
    /// engine from the spans.
    pub meta: Vec<(&'static str, ArrayRef)>,
    /// Payloads the source already knows are bad (a file that is not a JSON array), with the
    /// reason: they go to the source's `.errors` as they are.
    pub rejected: Vec<(Bytes, String)>,
    pub ack: Ack,
    /// Where each event was in the object it was read from, for its dead letter's reason.
    pub place: Option<Place>,
}

/// Where a batch's events were in their object: a dead letter says
/// `` `s3://bucket/key` line 12: <reason> ``.
#[derive(Debug, Clone)]
pub struct Place {
    /// The object, as the error names it.
    pub object: Arc<str>,
    /// `line` (NDJSON) or `item` (a JSON array's elements).
    pub unit: &'static str,
    /// Each event's 1-based line or item number.
    pub numbers: Arc<[i64]>,
}

impl Place {
    /// Event `i`'s location, before its reason.
    pub fn describe(&self, i: usize) -> String {
        match self.numbers.get(i) {
            Some(n) => format!("`{}` {} {n}", self.object, self.unit),
            None => format!("`{}`", self.object),
        }
    }
}

impl RawBatch {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.spans.iter().map(|s| s.len()).sum()
    }

    pub fn payload(&self, i: usize) -> &[u8] {
        &self.data[self.spans[i].clone()]
    }
}

/// Accumulates payloads into a [`RawBatch`] (for sources that receive events one by one).
#[derive(Debug, Default)]
pub struct RawBatchBuilder {
    data: Vec<u8>,
    spans: Vec<Range<usize>>,
}

impl RawBatchBuilder {
    pub fn push(&mut self, payload: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.spans.push(start..self.data.len());
        self.data.push(b'\n');
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Take what was pushed, leaving the builder empty.
    pub fn finish(&mut self, meta: Vec<(&'static str, ArrayRef)>, ack: Ack) -> RawBatch {
        let data = Bytes::from(std::mem::take(&mut self.data));
        RawBatch { data, spans: std::mem::take(&mut self.spans), meta, rejected: Vec::new(), ack, place: None }
    }
}

/// Events on their way into one sink: the JSON of each event plus the values of the sink's
/// per-event options (`key = id`) for the edge they came in on.
#[derive(Debug, Clone)]
pub struct SinkBatch {
    pub payloads: BinaryArray,
    /// Per-event option values by option name, one per event.
    pub fields: Vec<(String, ArrayRef)>,
    pub ack: Ack,
}

impl SinkBatch {
    pub fn len(&self) -> usize {
        self.payloads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }

    /// The events as NDJSON: each payload and a newline, in one buffer (one write per batch).
    pub fn ndjson(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_ndjson(&mut out);
        out
    }

    /// Append each payload and a newline to `out`.
    pub fn append_ndjson(&self, out: &mut Vec<u8>) {
        out.reserve(self.payloads.value_data().len() + self.len());
        for i in 0..self.len() {
            out.extend_from_slice(self.payloads.value(i));
            out.push(b'\n');
        }
    }

    pub fn field(&self, name: &str) -> Option<&ArrayRef> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
}

/// An event that could not be processed, on its way to an `.errors` port.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub error: String,
    /// The stage or sink that failed (`where at flow.phx:12:5`, `sink search`).
    pub node: String,
    /// The original bytes of the event.
    pub payload: Bytes,
    pub attempts: i64,
}
