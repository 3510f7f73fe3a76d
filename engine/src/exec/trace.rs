//! One event's way through a flow, told stage by stage (`POST /api/v1/route`): the task
//! graph's own decoder, operators and encoders run on a batch of that one event, and each
//! outcome recorded where the engine would send it on. Nothing reaches a connector.

use super::RAW_COLUMN;
use super::ack::Ack;
use super::batch::{DeadLetter, RawBatchBuilder};
use super::pipeline::{self, Column, Op, Pipeline, StageResult, Target, dead_letter_batch, raw_payload};
use crate::taskgraph::{SourcePlan, TaskGraph};
use arrow::array::RecordBatch;
use arrow::json::{WriterBuilder, writer::JsonArray};
use serde::Serialize;
use serde_json::Value as Json;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What happened to the event at one stage or sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// A `where`: passed or not; what followed if it did.
    Where {
        stage: String,
        passed: bool,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        then: Vec<Step>,
    },
    /// A `select`: its output (the columns a later stage or sink reads; `not_carried` names
    /// the others, which the engine does not carry on).
    Select {
        stage: String,
        output: Json,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        not_carried: Vec<String>,
        then: Vec<Step>,
    },
    /// A route: the arms the event took (one, or any number for `route all`), none if no arm
    /// matched.
    Route {
        stage: String,
        taken: Vec<ArmTaken>,
    },
    Drop {
        stage: String,
    },
    /// A sink reached, with the event as encoded for it.
    Sink {
        sink: String,
        event: Json,
    },
    /// The stage (or the encoding for a sink) failed on the event: it became a dead letter.
    Failed {
        stage: String,
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmTaken {
    /// The arm's pattern as written.
    pub arm: String,
    pub then: Vec<Step>,
}

/// The event tried against one source's schema.
#[derive(Debug, Clone, Serialize)]
pub struct SourceTrace {
    pub name: String,
    /// `source api (http) at flows/commerce.phx:28:1`.
    pub source: String,
    pub decoded: bool,
    /// Why it did not decode (the validator's reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub steps: Vec<Step>,
    /// The dead letters it became (undecodable, or a stage failed), and where the source's
    /// `.errors` port sent each.
    pub dead_letters: Vec<DeadTrace>,
    /// Every sink reached, in order, with the event it would receive (dead letters included).
    pub sinks: Vec<Delivery>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadTrace {
    pub node: String,
    pub error: String,
    /// The `.errors` pipeline's steps; empty when `.errors` is not wired (the engine counts
    /// and logs the event).
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub sink: String,
    pub event: Json,
}

/// `payload` through every source of `graph` (or the source named `only`).
pub fn trace(graph: &TaskGraph, payload: &[u8], only: Option<&str>) -> Vec<SourceTrace> {
    let sinks: Vec<&str> = graph.sinks.iter().map(|s| s.name.as_str()).collect();
    let sources = graph.sources.iter().filter(|s| only.is_none_or(|o| s.name == o));
    sources.map(|s| trace_source(s, &sinks, payload)).collect()
}

fn trace_source(source: &SourcePlan, sinks: &[&str], payload: &[u8]) -> SourceTrace {
    let mut b = RawBatchBuilder::default();
    b.push(payload);
    let raw = b.finish(Vec::new(), Ack::none());
    let (batch, mut dead) = source.decoder.decode(&raw);
    let error = if batch.is_none() { dead.first().map(|d| d.error.clone()) } else { None };
    let steps = match &batch {
        Some(b) => walk(&source.out, b, sinks, &mut dead),
        None => Vec::new(),
    };
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let dead_letters = dead
        .iter()
        .map(|d| {
            let steps = if source.errors.is_empty() {
                Vec::new()
            } else {
                match dead_letter_batch(std::slice::from_ref(d), &source.errors_schema, now) {
                    // A dead letter that fails on its own `.errors` path is not sent round again.
                    Ok(b) => walk(&source.errors, &b, sinks, &mut Vec::new()),
                    Err(e) => vec![Step::Failed { stage: ".errors".into(), error: e }],
                }
            };
            DeadTrace { node: d.node.clone(), error: d.error.clone(), steps }
        })
        .collect::<Vec<_>>();
    let mut reached = Vec::new();
    deliveries(&steps, &mut reached);
    dead_letters.iter().for_each(|d| deliveries(&d.steps, &mut reached));
    SourceTrace {
        name: source.name.clone(),
        source: source.title.clone(),
        decoded: batch.is_some(),
        error,
        steps,
        dead_letters,
        sinks: reached,
    }
}

fn deliveries(steps: &[Step], out: &mut Vec<Delivery>) {
    for s in steps {
        match s {
            Step::Where { then, .. } | Step::Select { then, .. } => deliveries(then, out),
            Step::Route { taken, .. } => taken.iter().for_each(|a| deliveries(&a.then, out)),
            Step::Sink { sink, event } => out.push(Delivery { sink: sink.clone(), event: event.clone() }),
            Step::Drop { .. } | Step::Failed { .. } => {}
        }
    }
}

/// The one-event `batch` through `p`, as [`Pipeline::push`] runs it; failures become `dead`.
fn walk(p: &Pipeline, batch: &RecordBatch, sinks: &[&str], dead: &mut Vec<DeadLetter>) -> Vec<Step> {
    let mut steps = Vec::new();
    if batch.num_rows() == 0 {
        return steps;
    }
    for t in &p.targets {
        let (title, outcome) = match t {
            Target::Sink(s) => (&s.title, guarded(|| sink_step(s, batch, sinks))),
            Target::Stage(st) => (&st.title, guarded(|| stage_step(&st.op, &st.title, batch, sinks, dead))),
        };
        steps.push(outcome.unwrap_or_else(|error| {
            dead.push(DeadLetter {
                error: error.clone(),
                node: title.clone(),
                payload: raw_payload(batch, 0),
                attempts: 1,
            });
            Step::Failed { stage: title.clone(), error }
        }));
    }
    steps
}

fn sink_step(s: &pipeline::SinkTarget, batch: &RecordBatch, sinks: &[&str]) -> StageResult<Step> {
    let mut emit = pipeline::Emit::default();
    s.push(batch, &Ack::none(), &mut emit)?;
    let payload = emit.sinks.first().map(|(_, b)| b.payloads.value(0).to_vec()).unwrap_or_default();
    let event = serde_json::from_slice(&payload)
        .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&payload).into_owned()));
    Ok(Step::Sink { sink: sinks.get(s.sink).copied().unwrap_or("?").to_string(), event })
}

fn stage_step(
    op: &Op,
    title: &str,
    batch: &RecordBatch,
    sinks: &[&str],
    dead: &mut Vec<DeadLetter>,
) -> StageResult<Step> {
    let stage = title.to_string();
    Ok(match op {
        Op::Filter { predicate, narrow, out } => {
            let passed = pipeline::mask(predicate, batch)?.true_count() == 1;
            let then = if passed {
                let rows = match narrow {
                    Some(n) => n.apply(batch)?,
                    None => batch.clone(),
                };
                walk(out, &rows, sinks, dead)
            } else {
                Vec::new()
            };
            Step::Where { stage, passed, then }
        }
        Op::Project { items, columns, schema, out } => {
            let projected = pipeline::project(items, columns, schema, batch)?;
            let carried = |i: usize| matches!(columns.get(i), Some(Column::Item(_) | Column::Input(_)));
            let not_carried =
                schema.fields().iter().enumerate().filter(|(i, f)| !carried(*i) && f.name() != RAW_COLUMN);
            let not_carried = not_carried.map(|(_, f)| f.name().clone()).collect();
            let output = row(&projected, carried)?;
            Step::Select { stage, output, not_carried, then: walk(out, &projected, sinks, dead) }
        }
        Op::Route { all, arms, narrow } => {
            let outs = pipeline::route(*all, arms, narrow.as_ref(), batch)?;
            let taken = arms
                .iter()
                .zip(outs)
                .filter(|(_, b)| b.num_rows() > 0)
                .map(|(a, b)| ArmTaken { arm: a.label.clone(), then: walk(&a.out, &b, sinks, dead) })
                .collect();
            Step::Route { stage, taken }
        }
        Op::Drop => Step::Drop { stage },
    })
}

/// The first row of `batch` as a JSON object: the columns `keep` says, nulls included.
fn row(batch: &RecordBatch, keep: impl Fn(usize) -> bool) -> StageResult<Json> {
    let columns: Vec<usize> = (0..batch.num_columns()).filter(|&i| keep(i)).collect();
    let b = batch.project(&columns).map_err(|e| e.to_string())?;
    let mut w = WriterBuilder::new().with_explicit_nulls(true).build::<_, JsonArray>(Vec::new());
    w.write(&b).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    let rows: Vec<Json> = serde_json::from_slice(&w.into_inner()).map_err(|e| e.to_string())?;
    Ok(rows.into_iter().next().unwrap_or(Json::Null))
}

/// A panic in a kernel is a failure of the stage, as in the engine.
fn guarded<T>(f: impl FnOnce() -> StageResult<T>) -> StageResult<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(format!("internal error: {}", pipeline::panic_message(&p))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::run_captured;
    use crate::{EngineCatalog, FsLoader};
    use phoenix_dsl::plan::Plan;
    use phoenix_dsl::span::SourceMap;
    use serde_json::json;
    use std::collections::HashMap;

    fn commerce() -> (Plan, SourceMap, EngineCatalog) {
        let catalog = EngineCatalog::new();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/commerce.phx");
        let c = phoenix_dsl::compile(path, &FsLoader, &catalog);
        assert!(!c.has_errors(), "{}", c.render(false));
        let plan = c.plan(&catalog).expect("plan");
        (plan, c.sources, catalog)
    }

    fn traced(plan: &Plan, sources: &SourceMap, payload: &str) -> SourceTrace {
        let metrics = crate::observability::metrics::Metrics::new(crate::taskgraph::node_labels(plan, sources));
        let graph = TaskGraph::build(plan, sources, &metrics).expect("graph");
        trace(&graph, payload.as_bytes(), Some("api")).pop().expect("the source api")
    }

    /// What the engine's run, with recording sinks, delivers for the same event.
    async fn run(plan: &Plan, sources: &SourceMap, catalog: &EngineCatalog, payload: &str) -> Vec<(String, Json)> {
        let inputs = HashMap::from([("api".to_string(), vec![payload.as_bytes().to_vec()])]);
        let (captured, _) = run_captured(plan, sources, catalog, &inputs).await.expect("run");
        let mut out: Vec<(String, Json)> = captured
            .into_iter()
            .flat_map(|(sink, events)| {
                events.into_iter().map(move |e| (sink.clone(), serde_json::from_str(&e).expect("json")))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn delivered(t: &SourceTrace) -> Vec<(String, Json)> {
        let mut out: Vec<(String, Json)> = t.sinks.iter().map(|d| (d.sink.clone(), d.event.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[tokio::test]
    async fn an_order_is_traced_through_every_stage_to_what_the_engine_delivers() {
        let (plan, sources, catalog) = commerce();
        let order = r#"{"id": "o-1", "type": "order", "ts": "2026-03-01T10:00:00Z", "amount": 100, "coupon": "X"}"#;
        let t = traced(&plan, &sources, order);
        assert!(t.decoded && t.error.is_none() && t.dead_letters.is_empty(), "{t:?}");
        assert_eq!(delivered(&t), run(&plan, &sources, &catalog, order).await);
        let sinks: Vec<&str> = t.sinks.iter().map(|d| d.sink.as_str()).collect();
        assert_eq!(sinks, ["orders", "search"]);
        assert_eq!(t.sinks[0].event["gross"], json!(119.0));
        assert_eq!(t.sinks[0].event["coupon"], "X", "undeclared fields pass through");

        // The http source's tagging `select`, then the merge of both paths; after it the
        // validation route (its `else` arm, dropped) and the three `where`s passed, ending in
        // the route by type taking `'order'`.
        let Step::Select { output, then, .. } = &t.steps[0] else { panic!("{:?}", t.steps[0]) };
        assert_eq!((output["channel"].clone(), output["origin"].clone()), (json!("http"), json!("unknown")));
        let Step::Select { stage, then, .. } = &then[0] else { panic!("{:?}", then[0]) };
        assert!(stage.starts_with("merge at "), "{stage}");
        let validation = then.iter().find(|s| matches!(s, Step::Route { .. })).expect("the validation route");
        let Step::Route { taken, .. } = validation else { unreachable!() };
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].arm, "else");
        assert!(matches!(taken[0].then[..], [Step::Drop { .. }]), "{taken:?}");
        let mut step = then.iter().find(|s| matches!(s, Step::Where { .. })).expect("the first where");
        for _ in 0..2 {
            let Step::Where { passed: true, then, .. } = step else { panic!("{step:?}") };
            step = &then[0];
        }
        let Step::Where { passed: true, then, .. } = step else { panic!("{step:?}") };
        let by_type = then.iter().find(|s| matches!(s, Step::Route { .. })).expect("the route by type");
        let Step::Route { taken, .. } = by_type else { unreachable!() };
        assert_eq!(taken.iter().map(|a| a.arm.as_str()).collect::<Vec<_>>(), ["'order'"]);
    }

    #[tokio::test]
    async fn a_failing_where_and_an_undecodable_event() {
        let (plan, sources, catalog) = commerce();
        let unknown = r#"{"id": "x-1", "type": "invoice", "ts": "2026-03-01T10:00:00Z"}"#;
        let t = traced(&plan, &sources, unknown);
        assert_eq!(delivered(&t), run(&plan, &sources, &catalog, unknown).await);
        assert_eq!(t.sinks.len(), 1);
        assert_eq!((t.sinks[0].sink.as_str(), t.sinks[0].event["reason"].clone()), ("rejected", json!("bad type")));
        // Tagged, merged, then the first `where` passes and the second (the type) does not.
        let Step::Select { then, .. } = &t.steps[0] else { panic!("{:?}", t.steps[0]) };
        let Step::Select { then, .. } = &then[0] else { panic!("{:?}", then[0]) };
        let first = then.iter().find(|s| matches!(s, Step::Where { .. })).expect("the first where");
        let Step::Where { passed: true, then, .. } = first else { panic!("{first:?}") };
        assert!(matches!(&then[0], Step::Where { passed: false, then, .. } if then.is_empty()), "{then:?}");

        let t = traced(&plan, &sources, r#"{"id": "o-1", "type": "order"}"#);
        assert!(!t.decoded && t.steps.is_empty(), "{t:?}");
        let error = t.error.as_deref().expect("a reason");
        assert!(error.contains("ts"), "{error}");
        assert_eq!(t.dead_letters.len(), 1);
        assert_eq!(t.sinks.iter().map(|d| d.sink.as_str()).collect::<Vec<_>>(), ["dead_letters"]);
        assert_eq!(t.sinks[0].event["error"], json!(error));
        let malformed = traced(&plan, &sources, "{not json");
        assert!(!malformed.decoded && malformed.error.is_some(), "{malformed:?}");
        assert_eq!(malformed.sinks[0].event["payload"], "{not json");
    }

    #[tokio::test]
    async fn a_failing_stage_is_a_dead_letter_and_route_all_takes_every_matching_arm() {
        let catalog = EngineCatalog::new();
        let text = "schema E { id: int, n: int }\n\
            source s = generate { count = 1 } as E\n\
            sink a = stdout {}\nsink b = stdout {}\nsink dead = stdout {}\n\
            route all s {\n  when n >= 0 => select *, 10 / n as q | a,\n  when id > 0 => b,\n  else => drop,\n}\n\
            s.errors | dead\n";
        let loader = phoenix_dsl::MemoryLoader::new([("f.phx".to_string(), text.as_bytes().to_vec())]);
        let c = phoenix_dsl::compile("f.phx", &loader, &catalog);
        assert!(!c.has_errors(), "{}", c.render(false));
        let plan = c.plan(&catalog).expect("plan");
        let metrics = crate::observability::metrics::Metrics::new(crate::taskgraph::node_labels(&plan, &c.sources));
        let graph = TaskGraph::build(&plan, &c.sources, &metrics).expect("graph");
        let event = r#"{"id": 1, "n": 0}"#;
        let t = trace(&graph, event.as_bytes(), None).pop().expect("the source");
        let Step::Route { taken, .. } = &t.steps[0] else { panic!("{:?}", t.steps[0]) };
        assert_eq!(taken.iter().map(|a| a.arm.as_str()).collect::<Vec<_>>(), ["when n >= 0", "when id > 0"]);
        let Step::Failed { stage, error } = &taken[0].then[0] else { panic!("{:?}", taken[0].then) };
        assert!(stage.starts_with("select at f.phx:7:"), "{stage}");
        assert!(error.contains("Divide by zero"), "{error}");
        assert_eq!((t.dead_letters.len(), t.dead_letters[0].error.as_str()), (1, error.as_str()));
        assert_eq!(t.sinks.iter().map(|d| d.sink.as_str()).collect::<Vec<_>>(), ["b", "dead"]);
        assert_eq!(t.sinks[1].event["error"], json!(error));

        // The engine delivers the same (the dead letter's `ts` aside).
        let inputs = HashMap::from([("s".to_string(), vec![event.as_bytes().to_vec()])]);
        let (captured, _) = run_captured(&plan, &c.sources, &catalog, &inputs).await.expect("run");
        let got: Vec<(&str, usize)> = captured.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
        assert_eq!(got, [("a", 0), ("b", 1), ("dead", 1)]);
        assert_eq!(serde_json::from_str::<Json>(&captured["b"][0]).expect("json"), t.sinks[0].event);
        let dead: Json = serde_json::from_str(&captured["dead"][0]).expect("json");
        assert_eq!(
            (dead["error"].clone(), dead["node"].clone()),
            (t.sinks[1].event["error"].clone(), t.sinks[1].event["node"].clone())
        );
    }
}
