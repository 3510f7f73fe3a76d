//! Pictures of the DAG: Graphviz dot, Mermaid, and a plain text form used by the plan tests.

use super::graph::{FlowGraph, NodeKind, OptionValue, Port};
use crate::span::SourceMap;
use std::fmt::{Display, Write};

/// The node's stage as the user wrote it (first line, shortened), for labels.
fn written<E>(flow: &FlowGraph<E>, sources: &SourceMap, i: petgraph::graph::NodeIndex) -> String {
    let node = &flow.graph[i];
    match &node.kind {
        NodeKind::Source { .. } | NodeKind::Sink { .. } => node.title(),
        NodeKind::Route { all, .. } => {
            if *all {
                "route all".into()
            } else {
                "route".into()
            }
        }
        _ => {
            let text = sources.snippet(node.span);
            let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if one_line.chars().count() > 60 {
                format!("{}…", one_line.chars().take(59).collect::<String>())
            } else {
                one_line
            }
        }
    }
}

fn edge_label<E>(flow: &FlowGraph<E>, from: petgraph::graph::NodeIndex, port: Port) -> String {
    match (port, &flow.graph[from].kind) {
        (Port::Arm(i), NodeKind::Route { arms, .. }) => arms.get(i).map(|a| a.label.clone()).unwrap_or_default(),
        (Port::Errors, _) => "errors".into(),
        _ => String::new(),
    }
}

/// Graphviz dot.
pub fn dot<E>(flow: &FlowGraph<E>, sources: &SourceMap) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::from("digraph flow {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
    for i in flow.graph.node_indices() {
        let shape = match flow.graph[i].kind {
            NodeKind::Source { .. } => "shape=cds, style=filled, fillcolor=\"#d7ecff\"",
            NodeKind::Sink { .. } => "shape=box3d, style=filled, fillcolor=\"#dff5d8\"",
            NodeKind::Route { .. } => "shape=diamond",
            NodeKind::Drop => "shape=point",
            NodeKind::Merge => "shape=invtrapezium",
            _ => "shape=box, style=rounded",
        };
        let _ = writeln!(out, "  n{} [label=\"{}\", {shape}];", i.index(), esc(&written(flow, sources, i)));
    }
    for e in flow.graph.edge_indices() {
        let Some((a, b)) = flow.graph.edge_endpoints(e) else { continue };
        let port = flow.graph[e].port;
        let label = edge_label(flow, a, port);
        let style = if port == Port::Errors { ", style=dashed, color=red" } else { "" };
        let _ = writeln!(out, "  n{} -> n{} [label=\"{}\"{style}];", a.index(), b.index(), esc(&label));
    }
    out.push_str("}\n");
    out
}

/// Mermaid flowchart.
pub fn mermaid<E>(flow: &FlowGraph<E>, sources: &SourceMap) -> String {
    let esc = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from("flowchart LR\n");
    for i in flow.graph.node_indices() {
        let label = esc(&written(flow, sources, i));
        let shape = match flow.graph[i].kind {
            NodeKind::Source { .. } => format!("[/\"{label}\"/]"),
            NodeKind::Sink { .. } => format!("[(\"{label}\")]"),
            NodeKind::Route { .. } => format!("{{\"{label}\"}}"),
            NodeKind::Merge => format!("[\\\"{label}\"/]"),
            _ => format!("(\"{label}\")"),
        };
        let _ = writeln!(out, "  n{}{shape}", i.index());
    }
    for e in flow.graph.edge_indices() {
        let Some((a, b)) = flow.graph.edge_endpoints(e) else { continue };
        let port = flow.graph[e].port;
        let label = esc(&edge_label(flow, a, port));
        let arrow = if port == Port::Errors { "-.->" } else { "-->" };
        if label.is_empty() {
            let _ = writeln!(out, "  n{} {arrow} n{}", a.index(), b.index());
        } else {
            let _ = writeln!(out, "  n{} {arrow}|\"{label}\"| n{}", a.index(), b.index());
        }
    }
    out
}

fn options(opts: &[(String, OptionValue)]) -> String {
    opts.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// A stable text form: every node with its expressions and output type, then every edge.
pub fn text<E: Display>(flow: &FlowGraph<E>) -> String {
    let mut out = String::new();
    for i in flow.graph.node_indices() {
        let n = &flow.graph[i];
        let _ = match &n.kind {
            NodeKind::Source { name, connector, options: o } => {
                writeln!(out, "n{}: source {name} = {connector} {{{}}}", i.index(), options(o))
            }
            NodeKind::Sink { name, connector, options: o } => {
                writeln!(out, "n{}: sink {name} = {connector} {{{}}}", i.index(), options(o))
            }
            NodeKind::Filter { predicate } => writeln!(out, "n{}: filter {predicate}", i.index()),
            NodeKind::Project { star, items } => {
                let mut parts: Vec<String> = if *star { vec!["*".into()] } else { Vec::new() };
                parts.extend(items.iter().map(|(n, e)| format!("{e} AS {n}")));
                writeln!(out, "n{}: project {}", i.index(), parts.join(", "))
            }
            NodeKind::Route { all, arms } => {
                let _ = writeln!(out, "n{}: route{}", i.index(), if *all { " all" } else { "" });
                for (k, a) in arms.iter().enumerate() {
                    let _ = match &a.condition {
                        Some(c) => writeln!(out, "    arm{k}: {c}"),
                        None => writeln!(out, "    arm{k}: else"),
                    };
                }
                Ok(())
            }
            NodeKind::Drop => writeln!(out, "n{}: drop", i.index()),
            // What a merge decided about metadata is worth seeing: who made what optional.
            NodeKind::Merge if n.output.metadata.fields.is_empty() => writeln!(out, "n{}: merge", i.index()),
            NodeKind::Merge => writeln!(
                out,
                "n{}: merge\n    metadata: {}",
                i.index(),
                crate::types::Ty::Record(n.output.metadata.clone())
            ),
        };
        if !matches!(n.kind, NodeKind::Sink { .. } | NodeKind::Drop) {
            let open = if n.output.open { " +undeclared" } else { "" };
            let _ = writeln!(out, "    out: {}{open}", crate::types::Ty::Record(n.output.record.clone()));
        }
    }
    for e in flow.graph.edge_indices() {
        let Some((a, b)) = flow.graph.edge_endpoints(e) else { continue };
        let w = &flow.graph[e];
        let _ = write!(out, "n{} -[{}]-> n{}", a.index(), w.port, b.index());
        for (k, x) in &w.sink_exprs {
            let _ = write!(out, " {k}={x}");
        }
        out.push('\n');
    }
    out
}
