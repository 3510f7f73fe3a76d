//! The planned DAG (DataFusion logical expressions) → the task graph the engine runs.
//!
//! ```text
//!  source task ──raw batches──▶ N workers ──sink batches──▶ sink task ──▶ connector
//!  (I/O only)     (bounded)      decode + fused pipeline      (bounded)    retries, acks
//!                                where → select → route ...
//! ```
//!
//! Every stage between a source and its sinks runs inside the worker that decoded the batch
//! (a fused pipeline: no channel, no copy between stages). Physical expressions are built once
//! here against each stream's schema; the column order of batches at run time is the order the
//! checker typed expressions against (see [`crate::exec::runtime_schema`]).

use crate::exec::decode::Decoder;
use crate::exec::encode::Encoder;
use crate::exec::pipeline::{Arm, Column, Narrow, Op, PhysExpr, Pipeline, SinkTarget, Stage, Target, prune};
use crate::exec::runtime_schema;
use crate::observability::metrics::Metrics;
use arrow_schema::SchemaRef;
use datafusion_common::DFSchema;
use datafusion_expr::Expr;
use datafusion_expr::execution_props::ExecutionProps;
use petgraph::Direction;
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use phoenix_dsl::plan::{NodeKind, OptionValue, Plan, Port};
use phoenix_dsl::span::SourceMap;
use phoenix_dsl::types::{StreamType, dead_letter_stream};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("cannot plan {node}: {message}")]
pub struct PlanError {
    pub node: String,
    pub message: String,
}

#[derive(Debug)]
pub struct TaskGraph {
    pub sources: Vec<SourcePlan>,
    pub sinks: Vec<SinkPlan>,
}

#[derive(Debug)]
pub struct SourcePlan {
    pub node: NodeIndex,
    pub name: String,
    pub connector: String,
    pub title: String,
    pub options: Vec<(String, OptionValue)>,
    pub stream: StreamType,
    pub decoder: Arc<Decoder>,
    pub out: Arc<Pipeline>,
    pub errors: Arc<Pipeline>,
    pub errors_schema: SchemaRef,
}

#[derive(Debug)]
pub struct SinkPlan {
    pub node: NodeIndex,
    pub name: String,
    pub connector: String,
    pub title: String,
    pub options: Vec<(String, OptionValue)>,
    pub errors: Arc<Pipeline>,
    pub errors_schema: SchemaRef,
}

/// `(title, location)` of every node, in node-index order: the labels of its metrics.
pub fn node_labels(flow: &Plan, sources: &SourceMap) -> Vec<(String, String)> {
    flow.graph.node_indices().map(|i| (flow.graph[i].title(), sources.location(flow.graph[i].span))).collect()
}

impl TaskGraph {
    pub fn build(flow: &Plan, sources: &SourceMap, metrics: &Metrics) -> Result<TaskGraph, PlanError> {
        // Physical expressions are built recursively, as deep as the flow's expressions.
        phoenix_dsl::stack::with_room(|| Self::build_on(flow, sources, metrics))
    }

    fn build_on(flow: &Plan, sources: &SourceMap, metrics: &Metrics) -> Result<TaskGraph, PlanError> {
        let g = &flow.graph;
        let mut sink_index = HashMap::new();
        let mut sinks_at = Vec::new();
        for i in g.node_indices() {
            if let NodeKind::Sink { .. } = &g[i].kind {
                sink_index.insert(i, sinks_at.len());
                sinks_at.push(i);
            }
        }
        let b = Builder { flow, sources, metrics, sink_index };
        let errors_stream = dead_letter_stream();
        let errors_encoder = Encoder::Columns(errors_stream.record.names().map(String::from).collect());
        let mut out = TaskGraph { sources: Vec::new(), sinks: Vec::new() };
        for i in g.node_indices() {
            let node = &g[i];
            if let NodeKind::Source { name, connector, options } = &node.kind {
                let title = b.title(i);
                let pipeline = b.pipeline(i, Port::Out, &node.output, &Encoder::Raw)?;
                let reads = pipeline.reads(&runtime_schema(&node.output));
                out.sources.push(SourcePlan {
                    node: i,
                    name: name.clone(),
                    connector: connector.clone(),
                    title: title.clone(),
                    options: options.clone(),
                    stream: node.output.clone(),
                    decoder: Arc::new(Decoder::new(&node.output, &title, &reads)),
                    out: Arc::new(pipeline),
                    errors: Arc::new(b.pipeline(i, Port::Errors, &errors_stream, &errors_encoder)?),
                    errors_schema: runtime_schema(&errors_stream),
                });
            }
        }
        for &i in &sinks_at {
            if let NodeKind::Sink { name, connector, options } = &g[i].kind {
                out.sinks.push(SinkPlan {
                    node: i,
                    name: name.clone(),
                    connector: connector.clone(),
                    title: b.title(i),
                    options: options.clone(),
                    errors: Arc::new(b.pipeline(i, Port::Errors, &errors_stream, &errors_encoder)?),
                    errors_schema: runtime_schema(&errors_stream),
                });
            }
        }
        Ok(out)
    }

    /// The task graph as text, for `phoenix explain`.
    pub fn explain(&self, workers: usize, sink_queue: usize) -> String {
        let mut s = String::new();
        let names: Vec<&str> = self.sinks.iter().map(|k| k.name.as_str()).collect();
        for src in &self.sources {
            let _ = writeln!(
                s,
                "task {title}: reads {connector}, sends raw batches to {workers} worker{plural} (queue {q})",
                title = src.title,
                connector = src.connector,
                plural = if workers == 1 { "" } else { "s" },
                q = raw_queue(workers),
            );
            let _ = writeln!(s, "  workers (fused, ×{workers}): decode against the declared schema, then");
            let unread = src.decoder.unread();
            if !unread.is_empty() {
                let _ = writeln!(s, "    (not read downstream, so validated but not carried: {})", unread.join(", "));
            }
            describe(&src.out, 2, &names, &mut s);
            if src.errors.is_empty() {
                let _ = writeln!(s, "    .errors: not wired (counted and logged)");
            } else {
                let _ = writeln!(s, "    .errors:");
                describe(&src.errors, 3, &names, &mut s);
            }
        }
        for k in &self.sinks {
            let _ = writeln!(s, "task {}: writes batches (queue {sink_queue}), retries with backoff", k.title);
            if !k.errors.is_empty() {
                let _ = writeln!(s, "  .errors:");
                describe(&k.errors, 2, &names, &mut s);
            }
        }
        s
    }
}

/// Batches waiting between a source and its workers: enough to keep every worker busy.
pub fn raw_queue(workers: usize) -> usize {
    workers * 2
}

fn describe(p: &Pipeline, depth: usize, sinks: &[&str], s: &mut String) {
    let pad = "  ".repeat(depth);
    for t in &p.targets {
        match t {
            Target::Sink(k) => {
                let how = match &k.encoder {
                    Encoder::Raw => "original bytes".to_string(),
                    Encoder::Patch(f) => format!("original bytes + {}", f.join(", ")),
                    Encoder::Columns(f) => format!("fields {}", f.join(", ")),
                };
                let _ = writeln!(s, "{pad}→ sink {} ({how})", sinks[k.sink]);
            }
            Target::Stage(st) => {
                let _ = writeln!(s, "{pad}{}", st.title);
                match &st.op {
                    Op::Filter { out, .. } | Op::Project { out, .. } => describe(out, depth + 1, sinks, s),
                    Op::Route { arms, .. } => {
                        for (i, a) in arms.iter().enumerate() {
                            let _ =
                                writeln!(s, "{pad}  arm {i}{}:", if a.condition.is_none() { " (else)" } else { "" });
                            describe(&a.out, depth + 2, sinks, s);
                        }
                    }
                    Op::Drop => {}
                }
            }
        }
    }
}

/// Integer arithmetic that overflows is an error (the event becomes a dead letter), never a
/// silently wrapped value.
fn checked(e: PhysExpr) -> datafusion_common::Result<PhysExpr> {
    use datafusion_common::tree_node::{Transformed, TreeNode};
    use datafusion_physical_expr::expressions::BinaryExpr;
    e.transform_up(|node| {
        Ok(match node.downcast_ref::<BinaryExpr>() {
            Some(b) if b.op().is_numerical_operators() => Transformed::yes(Arc::new(
                BinaryExpr::new(b.left().clone(), *b.op(), b.right().clone()).with_fail_on_overflow(true),
            ) as PhysExpr),
            _ => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

struct Builder<'a> {
    flow: &'a Plan,
    sources: &'a SourceMap,
    metrics: &'a Metrics,
    sink_index: HashMap<NodeIndex, usize>,
}

impl Builder<'_> {
    fn title(&self, i: NodeIndex) -> String {
        let n = &self.flow.graph[i];
        format!("{} at {}", n.title(), self.sources.location(n.span))
    }

    fn err(&self, i: NodeIndex, message: impl Into<String>) -> PlanError {
        PlanError { node: self.title(i), message: message.into() }
    }

    fn phys(&self, i: NodeIndex, e: &Expr, stream: &StreamType) -> Result<PhysExpr, PlanError> {
        let schema =
            DFSchema::try_from(stream.arrow_schema().as_ref().clone()).map_err(|x| self.err(i, x.to_string()))?;
        let p = datafusion_physical_expr::create_physical_expr(e, &schema, &ExecutionProps::new(), &Default::default())
            .map_err(|x| self.err(i, format!("{e}: {x}")))?;
        checked(p).map_err(|x| self.err(i, x.to_string()))
    }

    /// Everything wired to `port` of `from`, whose events are `stream`, encoded by `enc`.
    fn pipeline(&self, from: NodeIndex, port: Port, stream: &StreamType, enc: &Encoder) -> Result<Pipeline, PlanError> {
        let g = &self.flow.graph;
        let mut edges: Vec<_> =
            g.edges_directed(from, Direction::Outgoing).filter(|e| e.weight().port == port).collect();
        edges.sort_by_key(|e| e.id());
        let mut targets = Vec::new();
        for e in edges {
            let to = e.target();
            let node = &g[to];
            let stats = self.metrics.nodes[to.index()].clone();
            let stage = |op: Op| Target::Stage(Box::new(Stage { title: self.title(to), stats: stats.clone(), op }));
            targets.push(match &node.kind {
                NodeKind::Sink { .. } => Target::Sink(SinkTarget {
                    sink: self.sink_index[&to],
                    title: self.title(to),
                    exprs: e
                        .weight()
                        .sink_exprs
                        .iter()
                        .map(|(n, x)| Ok((n.clone(), self.phys(to, x, stream)?)))
                        .collect::<Result<_, PlanError>>()?,
                    encoder: enc.clone(),
                }),
                NodeKind::Filter { predicate } => {
                    let predicate = self.phys(to, predicate, stream)?;
                    let out = self.pipeline(to, Port::Out, &node.output, enc)?;
                    // A filter's and a route's events have their input's columns.
                    let schema = runtime_schema(&node.output);
                    let narrow = Narrow::new(&schema, &[&predicate], out.reads(&schema));
                    stage(Op::Filter { predicate, narrow, out })
                }
                NodeKind::Project { star, items } => {
                    let input = stream.arrow_schema();
                    let out = &node.output;
                    let names: Vec<String> = items.iter().map(|(n, _)| n.clone()).collect();
                    let mut columns = Vec::new();
                    for f in &out.record.fields {
                        columns.push(match names.iter().position(|n| *n == f.name) {
                            Some(i) => Column::Item(i),
                            None => Column::Input(input.index_of(&f.name).map_err(|x| self.err(to, x.to_string()))?),
                        });
                    }
                    for m in &out.metadata.fields {
                        let at = input.index_of(&format!("@{}", m.name)).map_err(|x| self.err(to, x.to_string()))?;
                        columns.push(Column::Input(at));
                    }
                    let fields: Vec<String> = out.record.names().map(String::from).collect();
                    let next = enc.after_select(*star, &names, &fields);
                    let after = self.pipeline(to, Port::Out, out, &next)?;
                    // Columns nothing downstream reads are not carried (or filtered) further.
                    let schema = runtime_schema(out);
                    let reads = after.reads(&schema);
                    for ((c, &read), field) in columns.iter_mut().zip(&reads).zip(schema.fields()) {
                        if !read {
                            *c = match c {
                                Column::Item(i) => Column::UnusedItem(*i, field.data_type().clone()),
                                _ => Column::Unused,
                            };
                        }
                    }
                    stage(Op::Project {
                        items: items.iter().map(|(_, x)| self.phys(to, x, stream)).collect::<Result<_, _>>()?,
                        columns,
                        schema: prune(&schema, &reads),
                        out: after,
                    })
                }
                NodeKind::Route { all, arms } => {
                    let arms: Vec<Arm> = arms
                        .iter()
                        .enumerate()
                        .map(|(k, a)| {
                            Ok(Arm {
                                label: a.label.clone(),
                                condition: a.condition.as_ref().map(|c| self.phys(to, c, stream)).transpose()?,
                                out: self.pipeline(to, Port::Arm(k), &node.output, enc)?,
                            })
                        })
                        .collect::<Result<_, PlanError>>()?;
                    let schema = runtime_schema(&node.output);
                    let mut after = vec![false; schema.fields().len()];
                    for a in &arms {
                        for (u, r) in after.iter_mut().zip(a.out.reads(&schema)) {
                            *u |= r;
                        }
                    }
                    let conditions: Vec<&PhysExpr> = arms.iter().filter_map(|a| a.condition.as_ref()).collect();
                    let narrow = Narrow::new(&schema, &conditions, after);
                    stage(Op::Route { all: *all, arms, narrow })
                }
                NodeKind::Drop => stage(Op::Drop),
                // Each input's batches are conformed to the merged stream's columns (by name:
                // inputs may declare fields in another order; metadata an input lacks is null),
                // then run through the stages after the merge. Those are planned again for
                // every input, so each keeps its own encoder (raw bytes, or the fields its
                // `select` made) and each batch its own source's `Ack`.
                NodeKind::Merge => {
                    let input = stream.arrow_schema();
                    let out = &node.output;
                    let mut columns = Vec::new();
                    for f in &out.record.fields {
                        columns.push(Column::Input(input.index_of(&f.name).map_err(|x| self.err(to, x.to_string()))?));
                    }
                    for m in &out.metadata.fields {
                        columns.push(match input.index_of(&format!("@{}", m.name)) {
                            Ok(at) => Column::Input(at),
                            Err(_) => Column::Null,
                        });
                    }
                    let after = self.pipeline(to, Port::Out, out, enc)?;
                    let schema = runtime_schema(out);
                    let reads = after.reads(&schema);
                    for (c, &read) in columns.iter_mut().zip(&reads) {
                        if !read {
                            *c = Column::Unused;
                        }
                    }
                    stage(Op::Project { items: Vec::new(), columns, schema: prune(&schema, &reads), out: after })
                }
                NodeKind::Source { .. } => return Err(self.err(to, "a source cannot have an input")),
            });
        }
        Ok(Pipeline { targets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineCatalog;
    use crate::exec::ack::Ack;
    use crate::exec::batch::RawBatchBuilder;
    use crate::exec::pipeline::Emit;
    use arrow::array::{Array, ArrayRef, StringArray};
    use phoenix_dsl::MemoryLoader;

    /// Each source's workers run the stages after a merge on their own batches: what reaches
    /// the sink holds that source's `Ack` (a failure reported on it reaches that source only)
    /// and that source's metadata (null where the source has none).
    #[tokio::test]
    async fn merged_batches_keep_their_source_and_ack() {
        let flow = r#"
            schema E { id: int }
            source api = http { address = "127.0.0.1:0" } as E
            source batch = file { path = "in.jsonl" } as E
            sink out = stdout
            merge(api, batch) | where id > 0 | select id, @file as file | out
        "#;
        let catalog = EngineCatalog::new();
        let loader = MemoryLoader::new([("m.phx".to_string(), flow.as_bytes().to_vec())]);
        let c = phoenix_dsl::compile("m.phx", &loader, &catalog);
        assert!(!c.has_errors(), "{}", c.render(false));
        let plan = c.plan(&catalog).expect("lowers");
        let metrics = Metrics::new(node_labels(&plan, &c.sources));
        let graph = TaskGraph::build(&plan, &c.sources, &metrics).expect("builds");
        let mut outcomes = Vec::new();
        for (name, file) in [("api", None), ("batch", Some("in.jsonl"))] {
            let src = graph.sources.iter().find(|s| s.name == name).expect("source");
            let (ack, waiter) = Ack::new();
            let mut b = RawBatchBuilder::default();
            b.push(br#"{"id":0}"#);
            b.push(br#"{"id":7}"#);
            let meta: Vec<(&'static str, ArrayRef)> = match file {
                Some(f) => vec![("file", Arc::new(StringArray::from(vec![f, f])) as ArrayRef)],
                None => Vec::new(),
            };
            let raw = b.finish(meta, ack);
            let (batch, dead) = src.decoder.decode(&raw);
            assert!(dead.is_empty());
            let mut emit = Emit::default();
            src.out.push(&batch.expect("decoded"), &raw.ack, &mut emit);
            drop(raw);
            let [(_, sent)] = emit.sinks.as_slice() else { panic!("one sink batch, got {}", emit.sinks.len()) };
            let events: Vec<&[u8]> = (0..sent.payloads.len()).map(|i| sent.payloads.value(i)).collect();
            let want = match file {
                Some(_) => br#"{"id":7,"file":"in.jsonl"}"#.as_slice(),
                None => br#"{"id":7,"file":null}"#.as_slice(),
            };
            assert_eq!(events, vec![want], "{name}");
            // The sink fails the batch of `api` only: each source hears about its own events.
            if name == "api" {
                sent.ack.fail("sink refused");
            }
            drop(emit);
            outcomes.push(waiter.wait().await);
        }
        assert_eq!(outcomes, vec![Err("sink refused".to_string()), Ok(())]);
    }
}
