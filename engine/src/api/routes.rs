//! `GET /api/v1/routes`: the route arms of the stored flows, read from the typed flow graph (so
//! what is listed is what the engine runs), each with its condition as written and the sinks it
//! reaches.
//!
//! An event's type is the value of one of its fields (`type` unless the caller names another):
//! an arm of a route `by` that field matches when the type is one of its values (`exact`), and
//! its `else` arm when none of the route's values is the type; an arm whose `when` reads the
//! field (and the `else` of such a route) may match, depending on the event's other fields
//! (`conditional`). Routes that never read the field are listed only without a type.

use petgraph::Direction;
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use phoenix_dsl::check::typed::{TExpr, TExprKind, Value};
use phoenix_dsl::plan::graph::{FlowGraph, NodeKind, OptionValue, Port};
use phoenix_dsl::span::{SourceMap, Span};
use serde::Serialize;
use serde_json::{Map, Value as Json};

/// One route arm of a flow.
#[derive(Debug, Clone, Serialize)]
pub struct ArmInfo {
    pub flow: String,
    /// `flow:line:column` of the arm: the same text gives the same id.
    pub id: String,
    /// `file:line:column` of the route statement.
    pub route: String,
    /// `route` (first match) or `route all` (fan-out).
    pub kind: &'static str,
    /// The key of a route `by` a key, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The arm's pattern as written: `'order'`, `'gold' | 'silver'`, `when amount > 10`, `else`.
    pub condition: String,
    /// With a type: `exact` or `conditional`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#match: Option<&'static str>,
    /// Every sink the arm's events can reach, with its options (secrets masked).
    pub sinks: Vec<SinkInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SinkInfo {
    pub name: String,
    pub connector: String,
    /// Option values as written; `env("NAME")` for settings and secrets, `***` for an inline
    /// secret, the expression text for per-event options.
    pub config: Map<String, Json>,
}

/// What to filter by: `field` (of the event) equal to `value`.
#[derive(Debug, Clone, Copy)]
pub struct TypeFilter<'a> {
    pub field: &'a str,
    pub value: &'a str,
}

/// The arms of `flow`'s routes, in source order; only those an event of `filter`'s type can
/// take when there is one.
pub fn arms(name: &str, flow: &FlowGraph<TExpr>, sources: &SourceMap, filter: Option<TypeFilter>) -> Vec<ArmInfo> {
    let g = &flow.graph;
    let mut routes: Vec<NodeIndex> =
        g.node_indices().filter(|&i| matches!(g[i].kind, NodeKind::Route { .. })).collect();
    routes.sort_by_key(|&i| (g[i].span.file, g[i].span.start));
    let mut out = Vec::new();
    for r in routes {
        let NodeKind::Route { all, arms } = &g[r].kind else { continue };
        let key = arms.iter().find_map(|a| value_key(a.condition.as_ref()?));
        let by_field = key.is_some_and(|k| filter.is_some_and(|f| is_field(k, f.field)));
        let reads =
            filter.is_some_and(|f| arms.iter().any(|a| a.condition.as_ref().is_some_and(|c| reads_field(c, f.field))));
        let value_matched = filter.is_some_and(|f| {
            by_field && arms.iter().any(|a| a.condition.as_ref().is_some_and(|c| has_value(c, f.value)))
        });
        for (i, arm) in arms.iter().enumerate() {
            let how = match (filter, &arm.condition) {
                (None, _) => None,
                (Some(f), Some(c)) if by_field => has_value(c, f.value).then_some("exact"),
                (Some(f), Some(c)) => reads_field(c, f.field).then_some("conditional"),
                // `else` gets what matched no value arm (in a fan-out too).
                (Some(_), None) if by_field => (!value_matched).then_some("exact"),
                (Some(_), None) => reads.then_some("conditional"),
            };
            if filter.is_some() && how.is_none() {
                continue;
            }
            out.push(ArmInfo {
                flow: name.to_string(),
                id: format!("{name}:{}", position(sources, arm.span)),
                route: sources.location(g[r].span),
                kind: if *all { "route all" } else { "route" },
                key: key.map(|k| sources.snippet(k.span).to_string()),
                condition: arm.label.clone(),
                r#match: how,
                sinks: sinks(flow, r, Port::Arm(i)),
            });
        }
    }
    out
}

fn position(sources: &SourceMap, span: Span) -> String {
    let (line, column) = sources.line_column(span);
    format!("{line}:{column}")
}

/// The key of a value arm: its condition is `key IN (values)`.
fn value_key(c: &TExpr) -> Option<&TExpr> {
    match &c.kind {
        TExprKind::InList { expr, negated: false, list } if list.iter().all(is_literal) => Some(expr),
        _ => None,
    }
}

fn is_literal(e: &TExpr) -> bool {
    match &e.kind {
        TExprKind::Literal(_) => true,
        TExprKind::Cast(inner) => is_literal(inner),
        _ => false,
    }
}

/// `e` is the top-level field `field` (through implicit casts).
fn is_field(e: &TExpr, field: &str) -> bool {
    match &e.kind {
        TExprKind::Field(f) => f == field,
        TExprKind::Cast(inner) => is_field(inner, field),
        _ => false,
    }
}

/// A value arm listing the string `value`.
fn has_value(c: &TExpr, value: &str) -> bool {
    let literal = |e: &TExpr| -> bool {
        let mut e = e;
        while let TExprKind::Cast(inner) = &e.kind {
            e = inner;
        }
        matches!(&e.kind, TExprKind::Literal(Value::String(s)) if s == value)
    };
    matches!(&c.kind, TExprKind::InList { list, negated: false, .. } if list.iter().any(literal))
}

/// `e` reads the top-level field `field` anywhere.
fn reads_field(e: &TExpr, field: &str) -> bool {
    let r = |x: &TExpr| reads_field(x, field);
    match &e.kind {
        TExprKind::Field(f) => f == field,
        TExprKind::Literal(_) | TExprKind::Meta(_) | TExprKind::Error => false,
        TExprKind::Access(inner, _) | TExprKind::Not(inner) | TExprKind::Neg(inner) | TExprKind::Cast(inner) => {
            r(inner)
        }
        TExprKind::Call(_, args) => args.iter().any(r),
        TExprKind::Binary(_, a, b) => r(a) || r(b),
        TExprKind::IsNull { expr, .. } => r(expr),
        TExprKind::InList { expr, list, .. } => r(expr) || list.iter().any(r),
        TExprKind::Between { expr, low, high, .. } => r(expr) || r(low) || r(high),
        TExprKind::Like { expr, pattern, .. } => r(expr) || r(pattern),
        TExprKind::Case { operand, whens, otherwise } => {
            operand.as_deref().is_some_and(r)
                || whens.iter().any(|(w, t)| r(w) || r(t))
                || otherwise.as_deref().is_some_and(r)
        }
    }
}

/// The sinks reachable from `node`'s `port`, through any stage and nested route (not through
/// `.errors`: dead letters are not where an event is routed), in the order first reached.
fn sinks(flow: &FlowGraph<TExpr>, node: NodeIndex, port: Port) -> Vec<SinkInfo> {
    let g = &flow.graph;
    let mut stack: Vec<NodeIndex> =
        g.edges_directed(node, Direction::Outgoing).filter(|e| e.weight().port == port).map(|e| e.target()).collect();
    stack.reverse();
    let mut seen = Vec::new();
    let mut out = Vec::new();
    while let Some(n) = stack.pop() {
        if seen.contains(&n) {
            continue;
        }
        seen.push(n);
        if let NodeKind::Sink { name, connector, options } = &g[n].kind {
            let config = options.iter().map(|(k, v)| (k.clone(), option_json(v))).collect();
            out.push(SinkInfo { name: name.clone(), connector: connector.clone(), config });
            continue;
        }
        let mut next: Vec<NodeIndex> = g
            .edges_directed(n, Direction::Outgoing)
            .filter(|e| e.weight().port != Port::Errors)
            .map(|e| e.target())
            .collect();
        next.reverse();
        stack.extend(next);
    }
    out
}

/// JSON for an option value: plain values as themselves, everything else as it displays (so
/// `env()` shows its name only and an inline secret `***`).
fn option_json(v: &OptionValue) -> Json {
    match v {
        OptionValue::String(s) => Json::String(s.clone()),
        OptionValue::Int(i) => Json::from(*i),
        OptionValue::Bool(b) => Json::Bool(*b),
        OptionValue::Float(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
        OptionValue::List(items) => Json::Array(items.iter().map(option_json).collect()),
        other => Json::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineCatalog;
    use phoenix_dsl::MemoryLoader;

    fn compile(text: &str) -> phoenix_dsl::Compilation {
        let loader = MemoryLoader::new([("f.phx".to_string(), text.as_bytes().to_vec())]);
        let c = phoenix_dsl::compile("f.phx", &loader, &EngineCatalog::new());
        assert!(!c.has_errors(), "{}", c.render(false));
        c
    }

    const FLOW: &str = "schema E { id: string, type: string, amount: float }\n\
        source s = generate { count = 1 } as E\n\
        sink a = file { path = env(\"A_PATH\", \"a.jsonl\") }\n\
        sink b = file { path = \"b.jsonl\" }\n\
        sink c = stdout {}\n\
        route s by type {\n  'x' | 'y' => a,\n  'z' => where amount > 1 | b,\n  else => c,\n}\n\
        route s {\n  when type = 'x' and amount > 10 => b,\n  else => drop,\n}\n\
        route all s {\n  when amount > 5 => c,\n  else => drop,\n}\n";

    fn run(filter: Option<TypeFilter>) -> Vec<(String, String, Option<&'static str>, Vec<String>)> {
        let c = compile(FLOW);
        arms("f", c.flow.as_ref().expect("flow"), &c.sources, filter)
            .into_iter()
            .map(|a| (a.id, a.condition, a.r#match, a.sinks.into_iter().map(|s| s.name).collect()))
            .collect()
    }

    fn row(
        id: &str,
        cond: &str,
        m: Option<&'static str>,
        sinks: &[&str],
    ) -> (String, String, Option<&'static str>, Vec<String>) {
        (id.to_string(), cond.to_string(), m, sinks.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn every_arm_without_a_type() {
        assert_eq!(
            run(None),
            [
                row("f:7:3", "'x' | 'y'", None, &["a"]),
                row("f:8:3", "'z'", None, &["b"]),
                row("f:9:3", "else", None, &["c"]),
                row("f:12:3", "when type = 'x' and amount > 10", None, &["b"]),
                row("f:13:3", "else", None, &[]),
                row("f:16:3", "when amount > 5", None, &["c"]),
                row("f:17:3", "else", None, &[]),
            ]
        );
    }

    #[test]
    fn value_arms_exactly_predicates_that_read_the_field_conditionally() {
        let f = |value| Some(TypeFilter { field: "type", value });
        assert_eq!(
            run(f("y")),
            [
                row("f:7:3", "'x' | 'y'", Some("exact"), &["a"]),
                row("f:12:3", "when type = 'x' and amount > 10", Some("conditional"), &["b"]),
                row("f:13:3", "else", Some("conditional"), &[]),
            ]
        );
        assert_eq!(
            run(f("other")),
            [
                row("f:9:3", "else", Some("exact"), &["c"]),
                row("f:12:3", "when type = 'x' and amount > 10", Some("conditional"), &["b"]),
                row("f:13:3", "else", Some("conditional"), &[]),
            ]
        );
        // Another field: no route is by it and no condition reads it.
        assert_eq!(run(Some(TypeFilter { field: "kind", value: "x" })), []);
    }

    #[test]
    fn sink_config_masks_settings() {
        let c = compile(FLOW);
        let arms = arms("f", c.flow.as_ref().expect("flow"), &c.sources, None);
        let a = &arms[0].sinks[0];
        assert_eq!((a.name.as_str(), a.connector.as_str()), ("a", "file"));
        assert_eq!(a.config["path"], Json::String("env(\"A_PATH\")".into()), "{:?}", a.config);
        assert_eq!(arms[0].key.as_deref(), Some("type"));
        assert_eq!(arms[0].kind, "route");
        assert_eq!(arms[5].kind, "route all");
        assert_eq!(arms[0].route, "f.phx:6:1");
    }
}
