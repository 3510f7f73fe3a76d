//! The flow DAG: sources, filters, projections, routes, drops and sinks joined by ports.
//!
//! The same shape serves twice: the checker builds a `FlowGraph<TExpr>` (typed expressions) and
//! [`super::lower`] maps it to a `FlowGraph<datafusion_expr::Expr>` for the engine.

use crate::ast::Json;
use crate::span::Span;
use crate::types::StreamType;
use petgraph::graph::DiGraph;
use std::fmt;

#[derive(Debug, Clone)]
pub struct FlowGraph<E> {
    pub graph: DiGraph<Node<E>, Edge<E>>,
    /// `test` blocks of the root file.
    pub tests: Vec<TestCase>,
    /// The `deploy { }` block, if any.
    pub deploy: Option<Vec<(String, OptionValue)>>,
}

#[derive(Debug, Clone)]
pub struct Node<E> {
    pub kind: NodeKind<E>,
    /// The statement or stage this node was made from.
    pub span: Span,
    /// Events on the node's main output (for a route: on every arm; for a sink: unused).
    pub output: StreamType,
}

#[derive(Debug, Clone)]
pub enum NodeKind<E> {
    Source {
        name: String,
        connector: String,
        options: Vec<(String, OptionValue)>,
    },
    /// Keeps events whose predicate is true.
    Filter {
        predicate: E,
    },
    /// Reshapes events; `star` keeps every input field (declared or not) before `items`.
    Project {
        star: bool,
        items: Vec<(String, E)>,
    },
    /// Sends each event to the first matching arm, or (`all`) to every matching arm. An arm with
    /// no condition is the `else` arm: events that matched no other arm.
    Route {
        all: bool,
        arms: Vec<RouteArm<E>>,
    },
    /// Discards events on purpose (they count as handled).
    Drop,
    /// `merge(a, b)`: the events of every input edge, as one stream (`Node::output`, the inputs'
    /// common schema). Each event keeps its own source's acknowledgement.
    Merge,
    Sink {
        name: String,
        connector: String,
        options: Vec<(String, OptionValue)>,
    },
}

#[derive(Debug, Clone)]
pub struct RouteArm<E> {
    pub condition: Option<E>,
    /// The arm's pattern as written (`'gold' | 'silver'`, `when amount > 10`, `else`).
    pub label: String,
    pub span: Span,
}

/// Where an edge leaves its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    Out,
    /// The `.errors` port of a source or sink: dead letters.
    Errors,
    /// Arm `i` of a route.
    Arm(usize),
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Out => f.write_str("out"),
            Port::Errors => f.write_str("errors"),
            Port::Arm(i) => write!(f, "arm{i}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Edge<E> {
    pub port: Port,
    /// For edges into a sink: the sink's per-event options (`key = id`) typed against this
    /// edge's events.
    pub sink_exprs: Vec<(String, E)>,
}

/// An option value after checking. `Env` is resolved by the engine when the flow starts.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Nanoseconds.
    Duration(i64),
    /// Bytes.
    Size(u64),
    List(Vec<OptionValue>),
    /// `env("NAME", default)`: read from the environment at start; never printed.
    Env {
        name: String,
        default: Option<Box<OptionValue>>,
    },
    /// A secret option given inline (discouraged: use `env`); displayed as `***`.
    Secret(Box<OptionValue>),
    /// A per-event expression; its typed form is on each edge into the sink (`Edge::sink_exprs`).
    Expr(String),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::String(s) => write!(f, "{s:?}"),
            OptionValue::Int(i) => write!(f, "{i}"),
            OptionValue::Float(x) => write!(f, "{x:?}"),
            OptionValue::Bool(b) => write!(f, "{b}"),
            OptionValue::Duration(ns) => write!(f, "{}", format_duration(*ns)),
            OptionValue::Size(b) => write!(f, "{b}B"),
            OptionValue::List(items) => {
                f.write_str("[")?;
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            // The value is a secret or a setting: show where it comes from, never what it is.
            OptionValue::Env { name, .. } => write!(f, "env({name:?})"),
            OptionValue::Secret(_) => f.write_str("***"),
            OptionValue::Expr(text) => f.write_str(text),
        }
    }
}

impl OptionValue {
    /// Add the `env()` names this value reads to `out` (name → has a default).
    fn env_vars(&self, out: &mut std::collections::BTreeMap<String, bool>) {
        match self {
            OptionValue::Env { name, default } => {
                let has_default = default.is_some();
                out.entry(name.clone()).and_modify(|d| *d &= has_default).or_insert(has_default);
                if let Some(d) = default {
                    d.env_vars(out);
                }
            }
            OptionValue::Secret(inner) => inner.env_vars(out),
            OptionValue::List(items) => items.iter().for_each(|i| i.env_vars(out)),
            _ => {}
        }
    }
}

/// `1500000000` → `1500ms`: the largest unit that divides exactly.
pub fn format_duration(ns: i64) -> String {
    const UNITS: &[(i64, &str)] = &[
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
    ];
    for (scale, unit) in UNITS {
        if ns != 0 && ns % scale == 0 {
            return format!("{}{unit}", ns / scale);
        }
    }
    format!("{ns}ns")
}

/// One `test` block: events fed to sources, events expected at sinks.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub span: Span,
    /// Source name and its events in order; a `Json::String` is a raw input line.
    pub inputs: Vec<(String, Vec<Json>)>,
    /// Sink name and the events it must receive, each matched as a subset (in any order).
    pub expects: Vec<(String, Vec<Json>)>,
}

impl<E> Node<E> {
    /// A short name: `source orders`, `where`, `sink search`.
    pub fn title(&self) -> String {
        match &self.kind {
            NodeKind::Source { name, connector, .. } => format!("source {name} ({connector})"),
            NodeKind::Filter { .. } => "where".into(),
            NodeKind::Project { .. } => "select".into(),
            NodeKind::Route { all: true, .. } => "route all".into(),
            NodeKind::Route { .. } => "route".into(),
            NodeKind::Drop => "drop".into(),
            NodeKind::Merge => "merge".into(),
            NodeKind::Sink { name, connector, .. } => format!("sink {name} ({connector})"),
        }
    }
}

impl<E> FlowGraph<E> {
    /// Every `env("NAME")` the flow's sources and sinks read, by name, with whether each read
    /// has a default (`false` if any read of the name lacks one). What a deployment must supply
    /// (the `deploy` block's own `env()`s are resolved where it is read, so they are left out).
    pub fn env_vars(&self) -> std::collections::BTreeMap<String, bool> {
        let mut out = std::collections::BTreeMap::new();
        for n in self.graph.node_weights() {
            if let NodeKind::Source { options, .. } | NodeKind::Sink { options, .. } = &n.kind {
                for (_, v) in options {
                    v.env_vars(&mut out);
                }
            }
        }
        out
    }

    /// Map every expression, keeping the shape (used to lower typed expressions).
    pub fn try_map_exprs<F, T, Err>(self, mut f: F) -> Result<FlowGraph<T>, Err>
    where
        F: FnMut(E) -> Result<T, Err>,
    {
        let mut graph: DiGraph<Node<T>, Edge<T>> =
            DiGraph::with_capacity(self.graph.node_count(), self.graph.edge_count());
        let (nodes, edges) = self.graph.into_nodes_edges();
        for n in nodes {
            let w = n.weight;
            let kind = match w.kind {
                NodeKind::Source { name, connector, options } => NodeKind::Source { name, connector, options },
                NodeKind::Filter { predicate } => NodeKind::Filter { predicate: f(predicate)? },
                NodeKind::Project { star, items } => NodeKind::Project {
                    star,
                    items: items.into_iter().map(|(n, e)| Ok((n, f(e)?))).collect::<Result<_, Err>>()?,
                },
                NodeKind::Route { all, arms } => NodeKind::Route {
                    all,
                    arms: arms
                        .into_iter()
                        .map(|a| {
                            Ok(RouteArm {
                                condition: a.condition.map(&mut f).transpose()?,
                                label: a.label,
                                span: a.span,
                            })
                        })
                        .collect::<Result<_, Err>>()?,
                },
                NodeKind::Drop => NodeKind::Drop,
                NodeKind::Merge => NodeKind::Merge,
                NodeKind::Sink { name, connector, options } => NodeKind::Sink { name, connector, options },
            };
            graph.add_node(Node { kind, span: w.span, output: w.output });
        }
        for e in edges {
            let (source, target) = (e.source(), e.target());
            let w = e.weight;
            let sink_exprs = w.sink_exprs.into_iter().map(|(n, x)| Ok((n, f(x)?))).collect::<Result<_, Err>>()?;
            graph.add_edge(source, target, Edge { port: w.port, sink_exprs });
        }
        Ok(FlowGraph { graph, tests: self.tests, deploy: self.deploy })
    }
}
