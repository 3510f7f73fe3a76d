//! Running a flow on in-memory events: the `test` blocks of `phoenix test`, and the run cases
//! of the test suite. Every source is replaced by the given events and every sink by a
//! recorder; everything between is the real engine.

use crate::EngineCatalog;
use crate::connectors::{BoxFuture, ConnectorError, Sink, Source, SourceContext, WriteError};
use crate::exec::ack::Ack;
use crate::exec::batch::{RawBatchBuilder, SinkBatch};
use crate::observability::metrics::Metrics;
use crate::run::{RunConfig, RunError, run};
use crate::taskgraph::{TaskGraph, node_labels};
use arrow::array::{Array, ArrayRef, Int64Array};
use phoenix_dsl::ast::Json;
use phoenix_dsl::plan::{NodeKind, Plan, TestCase};
use phoenix_dsl::span::SourceMap;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Events written to each sink, by sink name, in order.
pub type Captured = BTreeMap<String, Vec<String>>;

/// Run `plan` with `inputs` (raw payloads by source name; sources not named get none) and
/// return what every sink received. One worker per source, so output order is input order.
pub async fn run_captured(
    plan: &Plan,
    sources: &SourceMap,
    catalog: &EngineCatalog,
    inputs: &HashMap<String, Vec<Vec<u8>>>,
) -> Result<(Captured, Arc<Metrics>), RunError> {
    let metrics = Arc::new(Metrics::new(node_labels(plan, sources)));
    let graph = TaskGraph::build(plan, sources, &metrics).map_err(|e| RunError::Internal(e.to_string()))?;
    let mut config = RunConfig::new(1);
    let mut recorders = Vec::new();
    for i in plan.graph.node_indices() {
        match &plan.graph[i].kind {
            NodeKind::Source { name, .. } => {
                let events = inputs.get(name).cloned().unwrap_or_default();
                config.sources.insert(name.clone(), Box::new(MemorySource { events }));
            }
            NodeKind::Sink { name, .. } => {
                let out = Arc::new(Mutex::new(Vec::new()));
                recorders.push((name.clone(), out.clone()));
                config.sinks.insert(name.clone(), Box::new(RecordingSink { out, pending: Vec::new() }));
            }
            _ => {}
        }
    }
    run(graph, catalog, metrics.clone(), config).await?;
    let captured = recorders
        .into_iter()
        .map(|(name, out)| {
            let events = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
            (name, events)
        })
        .collect();
    Ok((captured, metrics))
}

/// Sends fixed payloads, then ends.
#[derive(Debug)]
pub struct MemorySource {
    pub events: Vec<Vec<u8>>,
}

impl Source for MemorySource {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(async move {
            ctx.set_connected();
            for (n, chunk) in self.events.chunks(ctx.batch_size).enumerate() {
                let mut b = RawBatchBuilder::default();
                chunk.iter().for_each(|e| b.push(e));
                let first = (n * ctx.batch_size) as i64;
                let lines: ArrayRef =
                    Arc::new(Int64Array::from_iter_values((1..=chunk.len() as i64).map(|i| first + i)));
                if ctx.send(b.finish(vec![("line", lines)], Ack::none())).await.is_err() {
                    break;
                }
            }
            Ok(())
        })
    }
}

/// Keeps what it is given; flushed events become visible.
#[derive(Debug)]
pub struct RecordingSink {
    out: Arc<Mutex<Vec<String>>>,
    pending: Vec<String>,
}

impl Sink for RecordingSink {
    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>> {
        for i in 0..batch.payloads.len() {
            self.pending.push(String::from_utf8_lossy(batch.payloads.value(i)).into_owned());
        }
        Box::pin(async { Ok(()) })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), WriteError>> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.append(&mut self.pending);
        Box::pin(async { Ok(()) })
    }
}

/// A `test` block's inputs as raw payloads: strings are raw lines, everything else JSON.
pub fn test_inputs(case: &TestCase) -> HashMap<String, Vec<Vec<u8>>> {
    let mut inputs: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for (source, events) in &case.inputs {
        let e = inputs.entry(source.clone()).or_default();
        for j in events {
            e.push(match j {
                Json::String(raw) => raw.clone().into_bytes(),
                other => to_serde(other).to_string().into_bytes(),
            });
        }
    }
    inputs
}

pub fn to_serde(j: &Json) -> serde_json::Value {
    use serde_json::Value;
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => serde_json::from_str(n).unwrap_or(Value::Null),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items, _) => Value::Array(items.iter().map(to_serde).collect()),
        Json::Object(fields, _) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), to_serde(v))).collect()),
    }
}

/// Does `actual` contain everything `expected` says? Objects may have more fields; arrays and
/// scalars must match exactly (numbers by value).
pub fn subset(expected: &serde_json::Value, actual: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().all(|(k, v)| a.get(k).is_some_and(|x| subset(v, x))),
        (Value::Array(e), Value::Array(a)) => e.len() == a.len() && e.iter().zip(a).all(|(x, y)| subset(x, y)),
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        (e, a) => e == a,
    }
}

/// Compare what sinks received with a test's expectations; `Err` explains every mismatch.
///
/// Each expected event must match (as a subset) its own received event, in any order: a route
/// hands a batch on arm by arm, so a sink fed by two arms sees them grouped, not interleaved.
pub fn check_expectations(case: &TestCase, captured: &Captured) -> Result<(), String> {
    let mut problems = Vec::new();
    for (sink, expected) in &case.expects {
        let got = captured.get(sink).map(Vec::as_slice).unwrap_or_default();
        let got: Vec<serde_json::Value> =
            got.iter().map(|s| serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.clone()))).collect();
        let expected: Vec<serde_json::Value> = expected.iter().map(to_serde).collect();
        let pairs = matching(&expected, &got);
        let show = |v: &[serde_json::Value]| v.iter().map(|e| format!("    {e}")).collect::<Vec<_>>().join("\n");
        if got.len() != expected.len() || pairs.iter().any(Option::is_none) {
            let unmatched: Vec<serde_json::Value> =
                expected.iter().zip(&pairs).filter(|(_, p)| p.is_none()).map(|(e, _)| e.clone()).collect();
            let mut msg = format!("sink `{sink}`: expected {} event(s), got {}", expected.len(), got.len());
            if !unmatched.is_empty() {
                msg += &format!("\n  not received (as a subset):\n{}", show(&unmatched));
            }
            msg += &format!("\n  received:\n{}", if got.is_empty() { "    (nothing)".into() } else { show(&got) });
            problems.push(msg);
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

/// For each expected event, the received event it is matched with: a maximum bipartite
/// matching (augmenting paths), so overlapping subsets cannot steal each other's match.
fn matching(expected: &[serde_json::Value], got: &[serde_json::Value]) -> Vec<Option<usize>> {
    fn augment(
        e: usize,
        expected: &[serde_json::Value],
        got: &[serde_json::Value],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for g in 0..got.len() {
            if seen[g] || !subset(&expected[e], &got[g]) {
                continue;
            }
            seen[g] = true;
            if owner[g].is_none_or(|o| augment(o, expected, got, owner, seen)) {
                owner[g] = Some(e);
                return true;
            }
        }
        false
    }
    let mut owner: Vec<Option<usize>> = vec![None; got.len()];
    for e in 0..expected.len() {
        augment(e, expected, got, &mut owner, &mut vec![false; got.len()]);
    }
    let mut pairs = vec![None; expected.len()];
    for (g, o) in owner.iter().enumerate() {
        if let Some(e) = o {
            pairs[*e] = Some(g);
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_matching() {
        assert!(subset(&json!({"a": 1}), &json!({"a": 1.0, "b": 2})));
        assert!(!subset(&json!({"a": 1, "c": 3}), &json!({"a": 1})));
        assert!(!subset(&json!([1]), &json!([1, 2])));
        assert!(subset(&json!({"n": {"x": "é"}}), &json!({"n": {"x": "é", "y": null}})));
    }

    #[test]
    fn matching_finds_a_pairing_in_any_order() {
        let got = vec![json!({"a": 1, "b": 2}), json!({"a": 1})];
        // Greedy would give the first expected event the first received one and fail the second.
        assert_eq!(matching(&[json!({"a": 1}), json!({"b": 2})], &got), vec![Some(1), Some(0)]);
        assert_eq!(matching(&[json!({"c": 1})], &got), vec![None]);
    }
}
