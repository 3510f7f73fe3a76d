//! The `_bulk` wire format, as Elastic documents it: the request body is NDJSON, one action
//! line (`{"index":{"_index":"i","_id":"1"}}`) followed by the document's source line per
//! event, ending in a newline. A `200` response carries `errors` (true if any item failed) and
//! one `items` entry per action, in order, each with its own `status` and, on failure, an
//! `error` object (`type`, `reason`, `caused_by`). A response that is not `2xx` failed as a whole.

use serde::Deserialize;
use serde::de::IgnoredAny;
use std::collections::BTreeMap;
use std::ops::Range;

/// The bulk action per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Add or replace the document (idempotent with an `_id`).
    Index,
    /// Add the document; an existing `_id` is refused with `409 version_conflict_engine_exception`.
    Create,
}

impl Action {
    pub fn parse(word: &str) -> Option<Action> {
        match word {
            "index" => Some(Action::Index),
            "create" => Some(Action::Create),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Index => "index",
            Action::Create => "create",
        }
    }
}

/// A bulk body being built: action/source pairs, and where each item starts so the body can be
/// cut into requests bounded by count and bytes without copying it again.
#[derive(Debug, Default)]
pub struct BulkBody {
    buf: Vec<u8>,
    starts: Vec<usize>,
}

impl BulkBody {
    /// Append one event. Without `id`, Elasticsearch generates one (a retry may then index the
    /// event twice); `source` is the event's JSON, made single-line if it is not.
    pub fn push(&mut self, action: Action, index: &str, id: Option<&str>, source: &[u8]) {
        self.starts.push(self.buf.len());
        self.buf.extend_from_slice(b"{\"");
        self.buf.extend_from_slice(action.name().as_bytes());
        self.buf.extend_from_slice(b"\":{\"_index\":");
        json_string(&mut self.buf, index);
        if let Some(id) = id {
            self.buf.extend_from_slice(b",\"_id\":");
            json_string(&mut self.buf, id);
        }
        self.buf.extend_from_slice(b"}}\n");
        let at = self.buf.len();
        self.buf.extend_from_slice(source);
        // Raw newlines in JSON can only be whitespace between tokens (inside strings they are
        // escaped), so a pretty-printed event becomes one line by turning them into spaces.
        for b in &mut self.buf[at..] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        self.buf.push(b'\n');
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.starts.clear();
    }

    /// The request body holding `items`.
    pub fn body(&self, items: Range<usize>) -> &[u8] {
        &self.buf[self.offset(items.start)..self.offset(items.end)]
    }

    fn offset(&self, item: usize) -> usize {
        self.starts.get(item).copied().unwrap_or(self.buf.len())
    }

    /// Cut the items into requests of at most `max_events` items and `max_bytes` bytes. An item
    /// larger than `max_bytes` on its own is sent alone (Elasticsearch decides about it).
    pub fn requests(&self, max_events: usize, max_bytes: usize) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.len() {
            let mut end = start + 1;
            while end < self.len() && end - start < max_events && self.offset(end + 1) - self.offset(start) <= max_bytes
            {
                end += 1;
            }
            out.push(start..end);
            start = end;
        }
        out
    }
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// What became of one item of a bulk request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Indexed,
    /// Throttled or a temporary cluster problem: send it again.
    Retry(String),
    /// Refused for what it is (a mapping error, a bad index name): dead-letter it.
    Reject(String),
}

#[derive(Debug, Deserialize)]
struct Head {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct Full {
    items: Vec<BTreeMap<String, Item>>,
}

#[derive(Debug, Deserialize)]
struct Item {
    status: u16,
    #[serde(default)]
    error: Option<EsError>,
}

/// Elasticsearch's error object (`type`, `reason`, `caused_by`, ...).
#[derive(Debug, Deserialize)]
pub struct EsError {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub caused_by: Option<Box<EsError>>,
}

impl std::fmt::Display for EsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(r) = &self.reason {
            write!(f, ": {r}")?;
        }
        if let Some(c) = &self.caused_by {
            write!(f, " (caused by {c})")?;
        }
        Ok(())
    }
}

/// Classify a `2xx` bulk response item by item. `Err` if the body is not a bulk response for
/// `n` actions (then the whole request counts as failed and is retried).
pub fn parse_response(body: &[u8], n: usize) -> Result<Vec<Outcome>, String> {
    let head: Head = serde_json::from_slice(body).map_err(|e| format!("the bulk response is not valid JSON: {e}"))?;
    if head.items.is_none() {
        return Err("the bulk response has no `items`".into());
    }
    if !head.errors {
        // Elasticsearch sets `errors` when any item failed; without it every item is indexed.
        return Ok(vec![Outcome::Indexed; n]);
    }
    let full: Full = serde_json::from_slice(body).map_err(|e| format!("unexpected bulk response items: {e}"))?;
    if full.items.len() != n {
        return Err(format!("the bulk response has {} items for {n} actions", full.items.len()));
    }
    Ok(full
        .items
        .iter()
        .map(|item| match item.values().next() {
            Some(i) => classify(i.status, i.error.as_ref()),
            None => Outcome::Retry("an empty item in the bulk response".into()),
        })
        .collect())
}

/// An item's status: 2xx indexed; 429, 5xx and `es_rejected_execution_exception` are worth
/// another try; anything else (400 mapping errors, 409 conflicts, 404 missing index with
/// `require_alias`) will fail the same way again.
pub fn classify(status: u16, error: Option<&EsError>) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Indexed;
    }
    let text = match error {
        Some(e) => format!("{status} {e}"),
        None => format!("status {status}"),
    };
    let rejected_execution = error.is_some_and(|e| e.kind == "es_rejected_execution_exception");
    if status == 429 || status >= 500 || rejected_execution { Outcome::Retry(text) } else { Outcome::Reject(text) }
}

/// Is a failed request (not an item) worth sending again? A 400 (the body itself is malformed)
/// or 413 (larger than `http.max_content_length`: lower `bulk_max_bytes`) will fail again;
/// throttling, unavailability, and even authentication (credentials may be fixed on the
/// cluster while we wait) may not.
pub fn request_retryable(status: u16) -> bool {
    !matches!(status, 400 | 413)
}

/// The message of a failed (non-2xx) response: Elasticsearch's error object if there is one.
pub fn request_error(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: EsError,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) => format!("{status} {}", e.error),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let short: String = text.chars().take(200).collect();
            if short.trim().is_empty() { format!("status {status}") } else { format!("{status} {}", short.trim()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn lines(b: &[u8]) -> Vec<Value> {
        std::str::from_utf8(b).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn builds_action_and_source_pairs() {
        let mut body = BulkBody::default();
        body.push(Action::Index, "orders-index", Some("o-1"), br#"{"id":"o-1","amount":5}"#);
        body.push(Action::Create, "we\"ird", None, b"{\"a\":\n  1}");
        let all = body.body(0..body.len());
        assert!(all.ends_with(b"\n"), "a bulk body ends with a newline");
        assert_eq!(
            lines(all),
            vec![
                json!({"index": {"_index": "orders-index", "_id": "o-1"}}),
                json!({"id": "o-1", "amount": 5}),
                json!({"create": {"_index": "we\"ird"}}),
                json!({"a": 1}),
            ]
        );
        assert_eq!(std::str::from_utf8(all).unwrap().lines().count(), 4, "pretty JSON became one line");
    }

    #[test]
    fn cuts_requests_by_count_and_bytes() {
        let mut body = BulkBody::default();
        for i in 0..10 {
            body.push(Action::Index, "i", Some(&i.to_string()), b"{\"x\":1}");
        }
        let one = body.body(0..1).len();
        assert_eq!(body.requests(4, usize::MAX), vec![0..4, 4..8, 8..10]);
        assert_eq!(body.requests(100, one * 3), vec![0..3, 3..6, 6..9, 9..10]);
        // An item larger than the byte bound still goes, alone.
        assert_eq!(body.requests(100, 1).len(), 10);
        let total: usize = body.requests(3, one * 2).iter().map(|r| body.body(r.clone()).len()).sum();
        assert_eq!(total, body.bytes());
    }

    #[test]
    fn all_indexed_when_errors_is_false() {
        let r = json!({"took": 3, "errors": false, "items": [
            {"index": {"_index": "i", "_id": "1", "status": 201, "result": "created"}},
            {"index": {"_index": "i", "_id": "2", "status": 200, "result": "updated"}}
        ]});
        assert_eq!(parse_response(r.to_string().as_bytes(), 2).unwrap(), vec![Outcome::Indexed; 2]);
    }

    #[test]
    fn classifies_each_item() {
        let r = json!({"took": 3, "errors": true, "items": [
            {"index": {"_index": "i", "_id": "1", "status": 201}},
            {"index": {"_index": "i", "_id": "2", "status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"}}},
            {"index": {"_index": "i", "_id": "3", "status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [amount] of type [float]", "caused_by": {"type": "number_format_exception", "reason": "For input string: \"x\""}}}},
            {"create": {"_index": "i", "_id": "4", "status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "[4]: version conflict, document already exists"}}},
            {"index": {"_index": "i", "_id": "5", "status": 503, "error": {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}}},
            {"index": {"_index": "i", "_id": "6", "status": 500, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}}
        ]});
        let out = parse_response(r.to_string().as_bytes(), 6).unwrap();
        assert_eq!(out[0], Outcome::Indexed);
        assert!(matches!(&out[1], Outcome::Retry(e) if e.starts_with("429 es_rejected_execution_exception")));
        assert_eq!(
            out[2],
            Outcome::Reject(
                "400 mapper_parsing_exception: failed to parse field [amount] of type [float] \
                 (caused by number_format_exception: For input string: \"x\")"
                    .into()
            )
        );
        assert!(matches!(&out[3], Outcome::Reject(e) if e.contains("version_conflict_engine_exception")));
        assert!(matches!(&out[4], Outcome::Retry(e) if e.contains("unavailable_shards_exception")));
        assert!(matches!(&out[5], Outcome::Retry(_)));
    }

    #[test]
    fn a_mismatched_response_fails_the_request() {
        let r = json!({"took": 1, "errors": true, "items": [{"index": {"status": 201}}]});
        assert!(parse_response(r.to_string().as_bytes(), 2).unwrap_err().contains("1 items for 2 actions"));
        assert!(parse_response(b"<html>", 1).is_err());
        assert!(parse_response(br#"{"took":1}"#, 1).is_err());
    }

    #[test]
    fn whole_request_errors() {
        let body = json!({"error": {"root_cause": [], "type": "illegal_argument_exception", "reason": "The bulk request must be terminated by a newline [\\n]"}, "status": 400});
        assert_eq!(
            request_error(400, body.to_string().as_bytes()),
            "400 illegal_argument_exception: The bulk request must be terminated by a newline [\\n]"
        );
        assert_eq!(request_error(502, b"bad gateway"), "502 bad gateway");
        assert!(request_retryable(429) && request_retryable(503) && request_retryable(401));
        assert!(!request_retryable(400) && !request_retryable(413));
    }
}
