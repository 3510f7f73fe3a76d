//! Name resolution and type checking: parsed modules → a typed [`FlowGraph`].
//!
//! All problems are collected, not only the first: the checker keeps going after an error and
//! uses [`Ty::Error`] to avoid reporting follow-on errors of one mistake.

pub(crate) mod expr;
pub mod facts;
mod options;
pub mod typed;

use crate::ast::{
    self, ArmPattern, ConnectorDecl, Expr, Ident, Item, Module, Pipeline, SchemaRef, SelectItem, Stage, StageKind,
};
use crate::catalog::{Catalog, OptionType, Role};
use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::fmt::{field_name, ident};
use crate::plan::graph::{Edge, FlowGraph, Node, NodeKind, OptionValue, Port, RouteArm, TestCase};
use crate::span::{SourceMap, Span};
use crate::types::{Record, RecordField, StreamType, Ty};
use expr::{ExprChecker, Scope};
use facts::{Decls, ExprScope, Facts, FieldUse};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use typed::{TExpr, TExprKind, Value};

/// Check modules (the root first, then its imports) into a typed flow graph. The graph is
/// returned even when there are errors (for `graph` on a broken flow); callers decide.
pub fn check(
    modules: &[Module],
    sources: &SourceMap,
    catalog: &dyn Catalog,
) -> (FlowGraph<TExpr>, Vec<Diagnostic>, Facts) {
    let mut c = Checker {
        catalog,
        sources,
        diags: Vec::new(),
        graph: DiGraph::new(),
        schemas: HashMap::new(),
        names: HashMap::new(),
        used_sources: HashSet::new(),
        used_flows: HashSet::new(),
        sink_inputs: Vec::new(),
        facts: Facts::default(),
        decls: Decls::default(),
    };
    let (graph, diags) = c.run(modules);
    (graph, diags, c.facts)
}

struct Checker<'a> {
    catalog: &'a dyn Catalog,
    sources: &'a SourceMap,
    diags: Vec<Diagnostic>,
    graph: DiGraph<Node<TExpr>, Edge<TExpr>>,
    schemas: HashMap<String, SchemaSlot<'a>>,
    /// Sources, sinks and flows share one namespace.
    names: HashMap<String, Named<'a>>,
    used_sources: HashSet<String>,
    used_flows: HashSet<String>,
    /// Every edge into a sink with the stage that wrote it, for the sink checks at the end.
    sink_inputs: Vec<(petgraph::graph::EdgeIndex, Span)>,
    facts: Facts,
    decls: Decls,
}

struct SchemaSlot<'a> {
    decl: &'a ast::SchemaDecl,
    state: Resolve<Arc<Record>>,
}

#[derive(Clone)]
enum Resolve<T> {
    Pending,
    InProgress,
    Done(Option<T>),
}

enum Named<'a> {
    Source {
        decl: &'a ConnectorDecl,
        node: Option<NodeIndex>,
    },
    Sink {
        decl: &'a ConnectorDecl,
        node: Option<NodeIndex>,
        schema: Option<Arc<Record>>,
        spec_exprs: Vec<(String, Expr, Ty)>,
    },
    Flow {
        decl: &'a ast::FlowDecl,
        state: Resolve<Cursor>,
    },
}

impl Named<'_> {
    fn span(&self) -> Span {
        match self {
            Named::Source { decl, .. } | Named::Sink { decl, .. } => decl.name.span,
            Named::Flow { decl, .. } => decl.name.span,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Named::Source { .. } => "source",
            Named::Sink { .. } => "sink",
            Named::Flow { .. } => "flow",
        }
    }
}

/// A point in the graph a stage reads from: a node's port and the events on it.
#[derive(Clone)]
struct Cursor {
    node: NodeIndex,
    port: Port,
    ty: StreamType,
    describe: String,
}

/// How a pipeline ended.
enum End {
    Stream(Cursor),
    Terminal,
    Broken,
}

impl<'a> Checker<'a> {
    fn run(&mut self, modules: &'a [Module]) -> (FlowGraph<TExpr>, Vec<Diagnostic>) {
        self.declare(modules);
        self.plan_sources();
        self.plan_sinks();
        let names: Vec<String> = modules
            .iter()
            .flat_map(|m| &m.items)
            .filter_map(|i| if let Item::Flow(f) = i { Some(f.name.name.clone()) } else { None })
            .collect();
        for name in names {
            self.flow(&name);
        }
        for item in modules.iter().flat_map(|m| &m.items) {
            if let Item::Pipeline(p) = item
                && let End::Stream(_) = self.pipeline(p)
            {
                self.push(
                    Diagnostic::new(Code::UnusedFlow, p.span, "this pipeline ends without a sink")
                        .label("its events go nowhere")
                        .help("end it with a sink or `drop`, or name it with `flow name = ...` to read it elsewhere"),
                );
            }
        }
        self.finish_sinks();
        self.cycles();
        self.unused(modules);
        // Tests and `deploy` come from the root file; imported ones are still checked.
        let tests = modules.first().map(|m| self.tests(m)).unwrap_or_default();
        let deploy = modules.first().and_then(|m| self.deploy(m));
        for m in modules.iter().skip(1) {
            self.tests(m);
            self.deploy(m);
        }
        let mut diags = std::mem::take(&mut self.diags);
        diags.sort_by_key(|d| (d.span().file, d.span().start, d.code));
        diags.dedup();
        let graph = std::mem::take(&mut self.graph);
        (FlowGraph { graph, tests, deploy }, diags)
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    // ---- declarations -------------------------------------------------------------------------

    fn declare(&mut self, modules: &'a [Module]) {
        for item in modules.iter().flat_map(|m| &m.items) {
            match item {
                Item::Schema(s) => {
                    if let Some(prev) = self.schemas.get(&s.name.name) {
                        let prev = prev.decl.name.span;
                        self.duplicate("schema", &s.name, prev);
                    } else if Ty::builtin(&s.name.name).is_some() {
                        self.push(
                            Diagnostic::new(
                                Code::Duplicate,
                                s.name.span,
                                format!("`{}` is a built-in type", s.name.name),
                            )
                            .label("cannot be redefined")
                            .help("choose another name for the schema"),
                        );
                    } else {
                        self.schemas.insert(s.name.name.clone(), SchemaSlot { decl: s, state: Resolve::Pending });
                    }
                }
                Item::Source(d) => self.declare_name(&d.name, Named::Source { decl: d, node: None }),
                Item::Sink(d) => self
                    .declare_name(&d.name, Named::Sink { decl: d, node: None, schema: None, spec_exprs: Vec::new() }),
                Item::Flow(f) => self.declare_name(&f.name, Named::Flow { decl: f, state: Resolve::Pending }),
                _ => {}
            }
        }
    }

    fn declare_name(&mut self, name: &Ident, named: Named<'a>) {
        if let Some(prev) = self.names.get(&name.name) {
            let (prev_span, kind) = (prev.span(), prev.kind());
            self.duplicate(kind, name, prev_span);
        } else {
            self.names.insert(name.name.clone(), named);
        }
    }

    fn duplicate(&mut self, kind: &str, name: &Ident, prev: Span) {
        let help = if kind == "schema" {
            "rename one of the schemas"
        } else {
            "sources, sinks and flows share one namespace; rename one of them"
        };
        self.push(
            Diagnostic::new(Code::Duplicate, name.span, format!("`{}` is defined more than once", name.name))
                .label("defined again here")
                .secondary(prev, format!("first defined here (as a {kind})"))
                .help(help),
        );
    }

    // ---- schemas and types ----------------------------------------------------------------------

    fn schema_named(&mut self, name: &Ident) -> Option<Arc<Record>> {
        let Some(slot) = self.schemas.get_mut(&name.name) else {
            let mut candidates: Vec<&str> = self.schemas.keys().map(String::as_str).collect();
            candidates.sort();
            let d = Diagnostic::new(Code::UndefinedType, name.span, format!("no schema named `{}`", name.name))
                .label("not declared");
            self.push(suggest(
                d,
                name.span,
                did_you_mean(&name.name, candidates.iter().copied()),
                ident,
                format!("declare it: `schema {} {{ ... }}`", name.name),
            ));
            return None;
        };
        match &slot.state {
            Resolve::Done(r) => return r.clone(),
            Resolve::InProgress => {
                let decl_span = slot.decl.name.span;
                self.push(
                    Diagnostic::new(Code::Cycle, name.span, format!("schema `{}` contains itself", name.name))
                        .label("recursive reference")
                        .secondary(decl_span, "declared here")
                        .help("a schema cannot refer to itself, even through a list; store references as ids instead"),
                );
                return None;
            }
            Resolve::Pending => {}
        }
        let decl = slot.decl;
        slot.state = Resolve::InProgress;
        let record = self.record(&decl.record);
        if let Some(slot) = self.schemas.get_mut(&name.name) {
            slot.state = Resolve::Done(Some(record.clone()));
        }
        Some(record)
    }

    fn record(&mut self, r: &ast::RecordType) -> Arc<Record> {
        let mut fields: Vec<RecordField> = Vec::new();
        let mut decls: Vec<Option<Span>> = Vec::new();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for f in &r.fields {
            if let Some(prev) = seen.get(f.name.name.as_str()) {
                self.push(
                    Diagnostic::new(Code::Duplicate, f.name.span, format!("field `{}` is declared twice", f.name.name))
                        .label("declared again")
                        .secondary(*prev, "first declared here"),
                );
                continue;
            }
            seen.insert(&f.name.name, f.name.span);
            let ty = self.type_expr(&f.ty);
            let def = FieldUse {
                span: f.name.span,
                name: f.name.name.clone(),
                decl: Some(f.name.span),
                ty: ty.clone(),
                optional: f.ty.optional,
            };
            self.facts.fields.push(def);
            fields.push(RecordField { name: f.name.name.clone(), ty, optional: f.ty.optional });
            decls.push(Some(f.name.span));
        }
        let record = Arc::new(Record { fields });
        self.decls.register(&record, decls);
        record
    }

    fn type_expr(&mut self, t: &ast::TypeExpr) -> Ty {
        match &t.kind {
            ast::TypeExprKind::List(inner) => Ty::List(Box::new(self.type_expr(inner))),
            ast::TypeExprKind::Record(r) => Ty::Record(self.record(r)),
            ast::TypeExprKind::Named(n) => {
                if let Some(b) = Ty::builtin(&n.name) {
                    return b;
                }
                if self.schemas.contains_key(&n.name) {
                    return self.schema_named(n).map_or(Ty::Error, Ty::Record);
                }
                let mut candidates: Vec<&str> = Ty::BUILTIN_NAMES.to_vec();
                let mut schemas: Vec<&str> = self.schemas.keys().map(String::as_str).collect();
                schemas.sort();
                candidates.extend(schemas);
                let d = Diagnostic::new(Code::UndefinedType, n.span, format!("unknown type `{}`", n.name))
                    .label("not a type");
                self.push(suggest(
                    d,
                    n.span,
                    did_you_mean(&n.name, candidates.iter().copied()),
                    ident,
                    "types are string, int, float, bool, timestamp, duration, list<T>, { ... } or a schema name".into(),
                ));
                Ty::Error
            }
        }
    }

    fn schema_ref(&mut self, s: &SchemaRef) -> Option<Arc<Record>> {
        match s {
            SchemaRef::Named(n) => self.schema_named(n),
            SchemaRef::Inline(r) => Some(self.record(r)),
        }
    }

    // ---- sources and sinks ----------------------------------------------------------------------

    fn connector_spec(&mut self, decl: &ConnectorDecl, role: Role) -> Option<&'a crate::catalog::ConnectorSpec> {
        let catalog: &'a dyn Catalog = self.catalog;
        if let Some(spec) = catalog.connector(&decl.connector.name, role) {
            return Some(spec);
        }
        let other = if role == Role::Source { Role::Sink } else { Role::Source };
        if catalog.connector(&decl.connector.name, other).is_some() {
            let mut names: Vec<&str> = catalog.connectors().iter().filter(|c| c.role == role).map(|c| c.name).collect();
            names.sort();
            names.dedup();
            self.push(
                Diagnostic::new(
                    Code::WrongRole,
                    decl.connector.span,
                    format!("`{}` can only be a {other}", decl.connector.name),
                )
                .label(format!("not a {role} connector"))
                .help(format!("{role} connectors: {}", names.join(", "))),
            );
            return None;
        }
        let mut names: Vec<&str> = catalog.connectors().iter().filter(|c| c.role == role).map(|c| c.name).collect();
        names.sort();
        names.dedup();
        let d = Diagnostic::new(
            Code::UnknownConnector,
            decl.connector.span,
            format!("unknown connector `{}`", decl.connector.name),
        )
        .label(format!("not a {role} connector"));
        self.push(suggest(
            d,
            decl.connector.span,
            did_you_mean(&decl.connector.name, names.iter().copied()),
            ident,
            format!("{role} connectors: {}", names.join(", ")),
        ));
        None
    }

    fn plan_sources(&mut self) {
        let mut decls: Vec<&'a ConnectorDecl> = self
            .names
            .values()
            .filter_map(|n| if let Named::Source { decl, .. } = n { Some(*decl) } else { None })
            .collect();
        decls.sort_by_key(|d| (d.span.file, d.span.start));
        for decl in decls {
            let spec = self.connector_spec(decl, Role::Source);
            let options = match spec {
                Some(spec) => {
                    self.options(
                        &decl.options,
                        &spec.options,
                        &format!("connector `{}`", spec.name),
                        decl.connector.span,
                    )
                    .0
                }
                None => Vec::new(),
            };
            let record = match &decl.schema {
                Some(s) => self.schema_ref(s).unwrap_or_default(),
                None => Arc::new(Record::default()),
            };
            let metadata = Arc::new(spec.map(|s| s.metadata_record()).unwrap_or_default());
            let output = StreamType { record, open: true, metadata };
            let node = self.graph.add_node(Node {
                kind: NodeKind::Source {
                    name: decl.name.name.clone(),
                    connector: decl.connector.name.clone(),
                    options,
                },
                span: decl.span,
                output,
            });
            if let Some(Named::Source { node: n, .. }) = self.names.get_mut(&decl.name.name) {
                *n = Some(node);
            }
        }
    }

    fn plan_sinks(&mut self) {
        let mut decls: Vec<&'a ConnectorDecl> = self
            .names
            .values()
            .filter_map(|n| if let Named::Sink { decl, .. } = n { Some(*decl) } else { None })
            .collect();
        decls.sort_by_key(|d| (d.span.file, d.span.start));
        for decl in decls {
            let spec = self.connector_spec(decl, Role::Sink);
            let (options, exprs) = match spec {
                Some(spec) => self.options(
                    &decl.options,
                    &spec.options,
                    &format!("connector `{}`", spec.name),
                    decl.connector.span,
                ),
                None => (Vec::new(), Vec::new()),
            };
            let schema = decl.schema.as_ref().and_then(|s| self.schema_ref(s));
            let node = self.graph.add_node(Node {
                kind: NodeKind::Sink { name: decl.name.name.clone(), connector: decl.connector.name.clone(), options },
                span: decl.span,
                output: dead_letters(),
            });
            if let Some(Named::Sink { node: n, schema: s, spec_exprs, .. }) = self.names.get_mut(&decl.name.name) {
                *n = Some(node);
                *s = schema;
                *spec_exprs = exprs;
            }
        }
    }

    /// Check an options block. Returns the static values and the per-event expressions.
    fn options(
        &mut self,
        opts: &ast::Options,
        specs: &[crate::catalog::OptionSpec],
        what: &str,
        anchor: Span,
    ) -> CheckedOptions {
        let mut values = Vec::new();
        let mut exprs = Vec::new();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut misspelled: HashSet<&str> = HashSet::new();
        for entry in &opts.entries {
            let name = entry.name.name.as_str();
            if let Some(prev) = seen.get(name) {
                self.push(
                    Diagnostic::new(Code::DuplicateOption, entry.name.span, format!("option `{name}` is given twice"))
                        .label("given again")
                        .secondary(*prev, "first given here"),
                );
                continue;
            }
            seen.insert(name, entry.name.span);
            let Some(spec) = specs.iter().find(|s| s.name == name) else {
                let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
                let suggestion = did_you_mean(name, names.iter().copied());
                // The typo stands for the suggestion: do not also report that one as missing.
                misspelled.extend(suggestion);
                let d = Diagnostic::new(Code::UnknownOption, entry.name.span, format!("{what} has no option `{name}`"))
                    .label("unknown option");
                self.push(suggest(
                    d,
                    entry.name.span,
                    suggestion,
                    field_name,
                    format!("options of {what}: {}", names.join(", ")),
                ));
                continue;
            };
            if let OptionType::Expr(ty) = &spec.ty {
                if let Some(d) = options::reject_env(&entry.value) {
                    self.push(d);
                    continue;
                }
                exprs.push((name.to_string(), entry.value.clone(), ty.clone()));
                values.push((name.to_string(), OptionValue::Expr(self.sources.snippet(entry.value.span).to_string())));
                continue;
            }
            match options::value(&entry.value, &spec.ty, name) {
                // Secrets given inline are wrapped so no rendering of the plan shows them.
                Ok(v) if spec.secret && !matches!(v, OptionValue::Env { .. }) => {
                    values.push((name.to_string(), OptionValue::Secret(Box::new(v))))
                }
                Ok(v) => values.push((name.to_string(), v)),
                Err(d) => self.push(d),
            }
        }
        let missing: Vec<&crate::catalog::OptionSpec> =
            specs.iter().filter(|s| s.required && !seen.contains_key(s.name) && !misspelled.contains(s.name)).collect();
        for spec in missing {
            self.push(
                Diagnostic::new(
                    Code::MissingOption,
                    opts.span.unwrap_or(anchor),
                    format!("{what} needs option `{}`", spec.name),
                )
                .label(format!("`{}` is missing", spec.name))
                .secondary(anchor, "required by this connector")
                .help(format!("add `{} = <{}>`: {}", spec.name, spec.ty, spec.doc)),
            );
        }
        (values, exprs)
    }

    // ---- streams and pipelines ------------------------------------------------------------------

    /// Resolve a pipeline input to the port it reads.
    fn input(&mut self, r: &ast::StreamRef) -> Option<Cursor> {
        let name = &r.name.name;
        let Some(named) = self.names.get(name) else {
            let mut candidates: Vec<&str> = self
                .names
                .iter()
                .filter(|(_, n)| r.errors.is_some() || !matches!(n, Named::Sink { .. }))
                .map(|(k, _)| k.as_str())
                .collect();
            candidates.sort();
            let otherwise = if self.schemas.contains_key(name) {
                format!(
                    "`{name}` is a schema; declare a source that reads it: `source {} = ... as {name}`",
                    name.to_lowercase()
                )
            } else {
                "declare it with `source` or `flow`".into()
            };
            let d = Diagnostic::new(Code::UndefinedStream, r.name.span, format!("no source or flow named `{name}`"))
                .label("not found");
            self.push(suggest(d, r.name.span, did_you_mean(name, candidates.iter().copied()), ident, otherwise));
            return None;
        };
        match (named, r.errors) {
            (Named::Source { node: Some(node), .. }, None) => {
                let node = *node;
                self.used_sources.insert(name.clone());
                Some(Cursor {
                    node,
                    port: Port::Out,
                    ty: self.graph[node].output.clone(),
                    describe: format!("source `{name}`"),
                })
            }
            (Named::Source { node: Some(node), .. }, Some(_)) | (Named::Sink { node: Some(node), .. }, Some(_)) => {
                Some(Cursor {
                    node: *node,
                    port: Port::Errors,
                    ty: dead_letters(),
                    describe: format!("`{name}.errors`"),
                })
            }
            (Named::Sink { .. }, None) => {
                self.push(
                    Diagnostic::new(
                        Code::WrongKind,
                        r.name.span,
                        format!("`{name}` is a sink; events cannot be read from it"),
                    )
                    .label("a sink, not a stream")
                    .help(format!("to handle the events `{name}` failed to write, read `{name}.errors`")),
                );
                None
            }
            (Named::Flow { .. }, Some(errors)) => {
                self.push(
                    Diagnostic::new(Code::NoErrorsPort, errors, format!("flow `{name}` has no `.errors` port"))
                        .label("only sources and sinks have one")
                        .help("read the `.errors` of the source the flow reads from"),
                );
                None
            }
            (Named::Flow { .. }, None) => {
                self.used_flows.insert(name.clone());
                match self.flow_at(name, r.name.span) {
                    FlowOut::Stream(c) => Some(c),
                    FlowOut::Terminal(decl_span) => {
                        self.push(
                            Diagnostic::new(
                                Code::NoOutput,
                                r.name.span,
                                format!("flow `{name}` ends in a sink, `drop` or route and produces no events"),
                            )
                            .label("nothing to read")
                            .secondary(decl_span, "the flow ends here")
                            .help("give the part before the last stage its own `flow` name and read that"),
                        );
                        None
                    }
                    FlowOut::Broken => None,
                }
            }
            _ => None,
        }
    }

    fn flow(&mut self, name: &str) {
        let span = match self.names.get(name) {
            Some(Named::Flow { decl, .. }) => decl.name.span,
            _ => return,
        };
        self.flow_at(name, span);
    }

    fn flow_at(&mut self, name: &str, reference: Span) -> FlowOut {
        let Some(Named::Flow { decl, state }) = self.names.get_mut(name) else { return FlowOut::Broken };
        let decl: &'a ast::FlowDecl = decl;
        match state {
            Resolve::Done(Some(c)) => return FlowOut::Stream(c.clone()),
            Resolve::Done(None) => {
                return match decl.pipeline.stages.last() {
                    Some(s) if s.kind.is_terminal() => FlowOut::Terminal(s.span),
                    _ => FlowOut::Broken,
                };
            }
            Resolve::InProgress => {
                *state = Resolve::Done(None);
                self.diags.push(
                    Diagnostic::new(Code::Cycle, reference, format!("flow `{name}` reads from itself"))
                        .label("this reference closes a cycle")
                        .secondary(decl.name.span, format!("flow `{name}` is defined here"))
                        .help("flows must form a directed acyclic graph"),
                );
                return FlowOut::Broken;
            }
            Resolve::Pending => *state = Resolve::InProgress,
        }
        let end = self.pipeline(&decl.pipeline);
        let (out, result) = match end {
            End::Stream(mut c) => {
                c.describe = format!("flow `{name}`");
                (Some(c.clone()), FlowOut::Stream(c))
            }
            End::Terminal => (None, FlowOut::Terminal(decl.pipeline.stages.last().map_or(decl.span, |s| s.span))),
            End::Broken => (None, FlowOut::Broken),
        };
        if let Some(Named::Flow { state, .. }) = self.names.get_mut(name) {
            // A cycle found inside already marked this flow broken.
            if matches!(state, Resolve::InProgress) {
                *state = Resolve::Done(out);
            }
        }
        result
    }

    fn pipeline(&mut self, p: &Pipeline) -> End {
        let cursor = match &p.input {
            ast::Input::Stream(r) => self.input(r),
            ast::Input::Merge { streams, span } => self.merge(streams, *span),
        };
        self.stages(&p.stages, cursor)
    }

    /// `merge(a, b, ...)`: one node reading every input, whose events have the inputs' common
    /// schema. Declared fields must agree exactly (a sink or stage after the merge is typed once
    /// for all of them); metadata is merged: a name some inputs lack becomes optional, a name
    /// whose types differ is left out.
    fn merge(&mut self, streams: &[ast::StreamRef], span: Span) -> Option<Cursor> {
        // Resolve every input first, so each unknown name is reported.
        let inputs: Vec<Option<Cursor>> = streams.iter().map(|r| self.input(r)).collect();
        let inputs: Vec<Cursor> = inputs.into_iter().collect::<Option<_>>()?;
        let first = inputs.first()?;
        for (k, (c, r)) in inputs.iter().zip(streams).enumerate() {
            if let Some(earlier) = inputs[..k].iter().position(|e| e.node == c.node && e.port == c.port) {
                self.push(
                    Diagnostic::new(Code::MergedTwice, r.span, format!("{} is named twice in this merge", c.describe))
                        .label("its events would pass twice")
                        .secondary(streams[earlier].span, "first named here")
                        .help("name each stream once"),
                );
            }
        }
        let mut ok = true;
        for (other, at) in inputs.iter().zip(streams).skip(1) {
            let differences = record_differences(&first.ty.record, &other.ty.record);
            if differences.is_empty() {
                continue;
            }
            ok = false;
            let (a, b) = (&first.describe, &other.describe);
            let mut d = Diagnostic::new(
                Code::MergeMismatch,
                at.span,
                format!("{b} does not have the schema of {a}, so they cannot be merged"),
            )
            .label(match differences.len() {
                1 => "1 field differs".to_string(),
                n => format!("{n} fields differ"),
            })
            .secondary(streams[0].span, "the first stream of the merge");
            for diff in differences {
                d = d.note(diff.describe(a, b));
            }
            self.push(
                d.help("give the streams one schema, or `select` them into one shape in a `flow` before merging"),
            );
        }
        if !ok {
            return None;
        }
        let mut metadata: Vec<RecordField> = Vec::new();
        let mut conflicting: HashSet<String> = HashSet::new();
        for c in &inputs {
            for m in &c.ty.metadata.fields {
                match metadata.iter_mut().find(|x| x.name == m.name) {
                    Some(x) if x.ty == m.ty => x.optional |= m.optional,
                    Some(_) => {
                        conflicting.insert(m.name.clone());
                    }
                    None => metadata.push(m.clone()),
                }
            }
        }
        metadata.retain(|m| !conflicting.contains(&m.name));
        for m in &mut metadata {
            // Events of an input without this metadata carry null in it.
            if !inputs.iter().all(|c| c.ty.metadata.field(&m.name).is_some()) {
                m.optional = true;
            }
        }
        let ty = StreamType {
            record: first.ty.record.clone(),
            // Events of an input no `select` closed still carry their undeclared fields.
            open: inputs.iter().any(|c| c.ty.open),
            metadata: Arc::new(Record { fields: metadata }),
        };
        let node = self.graph.add_node(Node { kind: NodeKind::Merge, span, output: ty.clone() });
        for c in &inputs {
            self.graph.add_edge(c.node, node, Edge { port: c.port, sink_exprs: Vec::new() });
        }
        let sources = self.sources;
        let names: Vec<&str> = streams.iter().map(|r| sources.snippet(r.span)).collect();
        Some(Cursor { node, port: Port::Out, ty, describe: format!("`merge({})`", names.join(", ")) })
    }

    /// Plan `stages` reading from `cursor` (`None`: the input did not resolve; stages are still
    /// checked for what can be checked without types).
    fn stages(&mut self, stages: &[Stage], mut cursor: Option<Cursor>) -> End {
        let mut terminal: Option<&Stage> = None;
        for stage in stages {
            if let Some(t) = terminal {
                self.push(
                    Diagnostic::new(Code::AfterTerminal, stage.span, "nothing can follow the end of a pipeline")
                        .label("after the end")
                        .secondary(t.span, "the pipeline ends here")
                        .help("start a new statement, or read this point's events through a named `flow`"),
                );
                return End::Broken;
            }
            match &stage.kind {
                StageKind::Where(e) => {
                    let Some(c) = cursor.take() else { continue };
                    let pred = self.expr(e, &c);
                    if !pred.ty.fits(&Ty::Bool) {
                        self.push(
                            Diagnostic::new(
                                Code::TypeMismatch,
                                e.span,
                                format!("`where` needs a bool, found {}", pred.ty.a()),
                            )
                            .label(format!("this is {}", pred.ty.a()))
                            .help("compare it with something: `where amount > 0`"),
                        );
                    }
                    let pred = pred.coerce(&Ty::Bool);
                    let node = self.add(NodeKind::Filter { predicate: pred }, stage.span, c.ty.clone(), &c);
                    cursor = Some(Cursor { node, port: Port::Out, ..c });
                }
                StageKind::Select(items) => {
                    let Some(c) = cursor.take() else { continue };
                    cursor = Some(self.select(items, stage.span, c));
                }
                StageKind::Route(route) => {
                    self.route(route, stage.span, cursor.take());
                    terminal = Some(stage);
                }
                StageKind::Drop => {
                    if let Some(c) = cursor.take() {
                        let ty = c.ty.clone();
                        self.add(NodeKind::Drop, stage.span, ty, &c);
                    }
                    terminal = Some(stage);
                }
                StageKind::Sink(name) => {
                    self.sink_stage(name, stage.span, cursor.take());
                    terminal = Some(stage);
                }
            }
        }
        match (terminal, cursor) {
            (Some(_), _) => End::Terminal,
            (None, Some(c)) => End::Stream(c),
            (None, None) => End::Broken,
        }
    }

    fn add(&mut self, kind: NodeKind<TExpr>, span: Span, output: StreamType, from: &Cursor) -> NodeIndex {
        let node = self.graph.add_node(Node { kind, span, output });
        self.graph.add_edge(from.node, node, Edge { port: from.port, sink_exprs: Vec::new() });
        node
    }

    fn expr(&mut self, e: &Expr, c: &Cursor) -> TExpr {
        self.facts.scopes.push(ExprScope { span: e.span, stream: c.ty.clone(), describe: c.describe.clone() });
        let scope = Scope { stream: &c.ty, describe: &c.describe };
        ExprChecker { catalog: self.catalog, diags: &mut self.diags, facts: &mut self.facts, decls: &self.decls }
            .check(e, &scope)
    }

    fn select(&mut self, items: &[SelectItem], span: Span, c: Cursor) -> Cursor {
        let mut star = false;
        // Each output field with where it was declared (see `facts::Decls`).
        let mut fields: Vec<(RecordField, Option<Span>)> = Vec::new();
        let mut out: Vec<(String, TExpr)> = Vec::new();
        let mut seen: HashMap<String, Span> = HashMap::new();
        for item in items {
            match item {
                SelectItem::Star(span) if star => self.push(
                    Diagnostic::new(Code::DuplicateField, *span, "`*` appears twice in one select")
                        .label("every field again")
                        .help("remove the second `*`"),
                ),
                SelectItem::Star(_) => {
                    star = true;
                    // Items named before `*` win over the input's field of the same name.
                    let input = &c.ty.record;
                    for (i, f) in input.fields.iter().enumerate() {
                        if !seen.contains_key(&f.name) {
                            fields.push((f.clone(), self.decls.get(input, i)));
                        }
                    }
                }
                SelectItem::Expr { expr, alias, span } => {
                    let t = self.expr(expr, &c);
                    let name = match (alias, &expr.unparen().kind) {
                        (Some(a), _) => a.name.clone(),
                        (None, ast::ExprKind::Field(path)) => path.last().map(|i| i.name.clone()).unwrap_or_default(),
                        (None, ast::ExprKind::Meta(m)) => m.name.clone(),
                        (None, _) => {
                            self.push(
                                Diagnostic::new(Code::UnnamedSelect, expr.span, "this select item needs a name")
                                    .label("computed value without a name")
                                    .help(format!("add a name: `{} as name`", self.sources.snippet(expr.span))),
                            );
                            continue;
                        }
                    };
                    if let Some(prev) = seen.get(&name) {
                        self.push(
                            Diagnostic::new(Code::DuplicateField, *span, format!("field `{name}` is produced twice"))
                                .label("produced again here")
                                .secondary(*prev, "first produced here")
                                .help("rename one of them with `as`"),
                        );
                        continue;
                    }
                    seen.insert(name.clone(), *span);
                    // A field passed on under its own name keeps its declaration, so a rename
                    // of the declaration reaches readers after the `select`.
                    let decl = match (alias, &expr.unparen().kind) {
                        (Some(a), _) => {
                            let def = FieldUse {
                                span: a.span,
                                name: name.clone(),
                                decl: Some(a.span),
                                ty: t.ty.clone(),
                                optional: t.nullable,
                            };
                            self.facts.fields.push(def);
                            Some(a.span)
                        }
                        (None, ast::ExprKind::Field(path)) => {
                            path.last().and_then(|l| self.facts.field_at(l.span)).and_then(|f| f.decl)
                        }
                        _ => None,
                    };
                    // An explicit item replaces a star field of the same name.
                    fields.retain(|(f, _)| f.name != name);
                    fields.push((RecordField { name: name.clone(), ty: t.ty.clone(), optional: t.nullable }, decl));
                    out.push((name, t));
                }
            }
        }
        let (fields, decls): (Vec<RecordField>, Vec<Option<Span>>) = fields.into_iter().unzip();
        let record = Arc::new(Record { fields });
        self.decls.register(&record, decls);
        let ty = StreamType { record, open: star && c.ty.open, metadata: c.ty.metadata.clone() };
        let describe = "the selected event".to_string();
        let node = self.add(NodeKind::Project { star, items: out }, span, ty.clone(), &c);
        Cursor { node, port: Port::Out, ty, describe }
    }

    fn sink_stage(&mut self, name: &Ident, span: Span, cursor: Option<Cursor>) {
        let target = match self.names.get(&name.name) {
            Some(Named::Sink { node: Some(n), .. }) => Some(*n),
            Some(Named::Sink { node: None, .. }) => None,
            Some(other) => {
                let kind = other.kind();
                self.push(
                    Diagnostic::new(Code::WrongKind, name.span, format!("`{}` is a {kind}, not a sink", name.name))
                        .label("cannot write to it")
                        .help("a pipeline ends in a sink declared with `sink name = connector { ... }`"),
                );
                return;
            }
            None => {
                let mut sinks: Vec<&str> = self
                    .names
                    .iter()
                    .filter(|(_, n)| matches!(n, Named::Sink { .. }))
                    .map(|(k, _)| k.as_str())
                    .collect();
                sinks.sort();
                let otherwise = if sinks.is_empty() {
                    format!("declare it: `sink {} = file {{ path = \"out.jsonl\" }}`", name.name)
                } else {
                    format!("declared sinks: {}", sinks.join(", "))
                };
                let d = Diagnostic::new(Code::UndefinedSink, name.span, format!("no sink named `{}`", name.name))
                    .label("not found");
                self.push(suggest(d, name.span, did_you_mean(&name.name, sinks.iter().copied()), ident, otherwise));
                return;
            }
        };
        if let (Some(target), Some(c)) = (target, cursor) {
            let e = self.graph.add_edge(c.node, target, Edge { port: c.port, sink_exprs: Vec::new() });
            self.sink_inputs.push((e, span));
        }
    }

    fn route(&mut self, route: &ast::Route, span: Span, cursor: Option<Cursor>) {
        if route.arms.is_empty() {
            self.push(
                Diagnostic::new(Code::EmptyRoute, route.arms_span, "route has no arms")
                    .label("empty")
                    .help("add arms: `'value' => sink`, `when <predicate> => sink`, `else => sink`"),
            );
            return;
        }
        let all = route.all.is_some();
        let key = match (&route.key, &cursor) {
            (Some(k), Some(c)) => Some(self.expr(k, c)),
            _ => None,
        };
        // Arm patterns: else must be last and unique; patterns must fit the route's form.
        let last = route.arms.len() - 1;
        for (i, arm) in route.arms.iter().enumerate() {
            match &arm.pattern {
                ArmPattern::Else(s) if i != last => {
                    let first_else = route.arms.iter().position(|a| matches!(a.pattern, ArmPattern::Else(_))) == Some(i);
                    let else_count = route.arms.iter().filter(|a| matches!(a.pattern, ArmPattern::Else(_))).count();
                    let (msg, help) = if else_count > 1 {
                        ("a route has only one `else` arm", "remove all but one `else` arm, and keep it last")
                    } else if first_else {
                        ("`else` must be the last arm", "move the `else` arm to the end")
                    } else {
                        ("a route has only one `else` arm", "remove all but one `else` arm")
                    };
                    self.push(Diagnostic::new(Code::ElseArm, *s, msg).label("misplaced").help(help));
                }
                ArmPattern::Values(v) if route.key.is_none() => self.push(
                    Diagnostic::new(Code::ArmKind, v.first().map_or(arm.span, |e| e.span), "value arm in a route without `by`")
                        .label("compared with what?")
                        .help("add the key to compare with: `route ... by <expr> { ... }`, or write `when <predicate> => ...`"),
                ),
                ArmPattern::When(w) if route.key.is_some() => self.push(
                    Diagnostic::new(Code::ArmKind, w.span, "`when` arm in a route `by` a key")
                        .label("predicate arm")
                        .help("in a `route ... by key` route, arms are values: `'a' | 'b' => target`"),
                ),
                _ => {}
            }
        }
        let Some(c) = cursor else {
            // Still check the arms' targets for undefined sinks.
            for arm in &route.arms {
                self.stages(&arm.target, None);
            }
            return;
        };
        let mut arms: Vec<RouteArm<TExpr>> = Vec::new();
        // The output port of each written arm; `None` for arms dropped because of an error.
        let mut ports: Vec<Option<usize>> = Vec::with_capacity(route.arms.len());
        let mut seen_values: Vec<(TExpr, Span)> = Vec::new();
        let mut seen_preds: Vec<&Expr> = Vec::new();
        let mut always: Option<Span> = None;
        let mut covered_bool: HashSet<bool> = HashSet::new();
        let mut has_else = false;
        for arm in &route.arms {
            let label = match &arm.pattern {
                ArmPattern::Else(_) => "else".to_string(),
                ArmPattern::When(w) => format!("when {}", self.sources.snippet(w.span)),
                ArmPattern::Values(v) => {
                    v.iter().map(|e| self.sources.snippet(e.span).to_string()).collect::<Vec<_>>().join(" | ")
                }
            };
            let unreachable = match (always, all) {
                (Some(_), false) => true,
                // In a fan-out, `else` gets what matched no arm: nothing, after an arm that always matches.
                (Some(_), true) => matches!(arm.pattern, ArmPattern::Else(_)),
                (None, _) => false,
            };
            if let (Some(a), true) = (always, unreachable) {
                self.push(
                    Diagnostic::new(Code::UnreachableArm, arm.span, "unreachable route arm")
                        .label("never receives events")
                        .secondary(a, "this earlier arm matches every event"),
                );
            }
            let condition = match &arm.pattern {
                ArmPattern::Else(_) => {
                    has_else = true;
                    None
                }
                ArmPattern::When(w) => {
                    let t = self.expr(w, &c);
                    if !t.ty.fits(&Ty::Bool) {
                        self.push(
                            Diagnostic::new(
                                Code::TypeMismatch,
                                w.span,
                                format!("a `when` arm needs a bool, found {}", t.ty.a()),
                            )
                            .label(format!("this is {}", t.ty.a())),
                        );
                    }
                    if let Some(prev) = seen_preds.iter().find(|p| p.same_as(w)) {
                        let code = if all { Code::DuplicateArm } else { Code::UnreachableArm };
                        self.push(
                            Diagnostic::new(code, w.span, "this arm repeats an earlier condition")
                                .label(if all { "same condition" } else { "never receives events" })
                                .secondary(prev.span, "same condition here"),
                        );
                    }
                    seen_preds.push(w);
                    if t.as_bool_literal() == Some(true) {
                        always = Some(arm.span);
                    }
                    Some(t.coerce(&Ty::Bool))
                }
                ArmPattern::Values(values) => {
                    let Some(k) = key.clone() else {
                        ports.push(None);
                        continue;
                    };
                    let mut items = Vec::new();
                    for v in values {
                        let tv = self.expr(v, &c);
                        if !matches!(tv.kind, TExprKind::Literal(_) | TExprKind::Error) {
                            self.push(
                                Diagnostic::new(Code::ArmKind, v.span, "route arm values must be literals")
                                    .label("not a literal"),
                            );
                            continue;
                        }
                        if k.ty.unify(&tv.ty).is_none() {
                            self.push(
                                Diagnostic::new(
                                    Code::TypeMismatch,
                                    v.span,
                                    format!("arm value is {}, but the route key is {}", tv.ty.a(), k.ty.a()),
                                )
                                .label(format!("expected {}", k.ty))
                                .secondary(k.span, format!("the key is {}", k.ty.a())),
                            );
                            continue;
                        }
                        if matches!(tv.kind, TExprKind::Literal(Value::Null)) {
                            self.push(
                                Diagnostic::new(Code::NullComparison, v.span, "an arm value of `null` never matches")
                                    .label("a key that is null matches no value")
                                    .help("null keys go to the `else` arm; route them explicitly with `when <key> is null => ...` in a route without `by`"),
                            );
                        }
                        if let Some((_, prev)) = seen_values.iter().find(|(p, _)| p.kind == tv.kind) {
                            let code = if all { Code::DuplicateArm } else { Code::UnreachableArm };
                            self.push(
                                Diagnostic::new(
                                    code,
                                    v.span,
                                    format!(
                                        "value {} is already matched by an earlier arm",
                                        self.sources.snippet(v.span)
                                    ),
                                )
                                .label(if all { "duplicate value" } else { "never reaches this arm" })
                                .secondary(*prev, "first matched here"),
                            );
                        }
                        if let TExprKind::Literal(Value::Bool(b)) = tv.kind {
                            covered_bool.insert(b);
                        }
                        seen_values.push((tv.clone(), v.span));
                        items.push(tv);
                    }
                    if items.is_empty() {
                        ports.push(None);
                        continue;
                    }
                    let common = items.iter().fold(k.ty.clone(), |acc, i| acc.unify(&i.ty).unwrap_or(acc));
                    let key_c = k.clone().coerce(&common);
                    let list: Vec<TExpr> = items.into_iter().map(|i| i.coerce(&common)).collect();
                    Some(TExpr {
                        span: arm.span,
                        ty: Ty::Bool,
                        nullable: key_c.nullable,
                        kind: TExprKind::InList { expr: Box::new(key_c), list, negated: false },
                    })
                }
            };
            ports.push(Some(arms.len()));
            arms.push(RouteArm { condition, label, span: arm.span });
        }
        let exhaustive = has_else
            || always.is_some()
            || key.as_ref().is_some_and(|k| k.ty == Ty::Bool && !k.nullable && covered_bool.len() == 2);
        if !exhaustive {
            let what = if key.is_some() { "events whose key matches no arm" } else { "events that match no arm" };
            let edits = self.else_arm(route);
            self.push(
                Diagnostic::new(Code::NoElse, route.arms_span, "route has no `else` arm")
                    .label(format!("{what} are dropped"))
                    .help("add `else => drop` to drop them on purpose, or `else => <sink>` to keep them")
                    .fix("add `else => drop`", edits),
            );
        }
        let node = self.add(NodeKind::Route { all, arms: arms.clone() }, span, c.ty.clone(), &c);
        // Plan each arm's target from its own port (arms dropped above are checked without one).
        for (arm, port) in route.arms.iter().zip(ports) {
            let from =
                port.map(|p| Cursor { node, port: Port::Arm(p), ty: c.ty.clone(), describe: c.describe.clone() });
            if let End::Stream(_) = self.stages(&arm.target, from) {
                let last = arm.target.last().map_or(arm.span, |s| s.span);
                self.push(
                    Diagnostic::new(Code::NoOutput, last, "route arm does not end in a sink or `drop`")
                        .label("events would go nowhere")
                        .help("end the arm's pipeline with a sink, `drop`, or another route"),
                );
            }
        }
    }

    /// The edits adding `else => drop` as the last arm of `route` (which has arms), laid out
    /// like the arms around it: on its own line before a `}` that has its own line.
    fn else_arm(&self, route: &ast::Route) -> Vec<(Span, String)> {
        let text = &self.sources.get(route.arms_span.file).text;
        let Some(last) = route.arms.last() else { return Vec::new() };
        let close = (route.arms_span.end as usize).saturating_sub(1);
        let after_last = text.get(last.span.end as usize..close).unwrap_or("");
        let comma = after_last.trim_start().starts_with(',');
        let line_start = text[..close].rfind('\n').map_or(0, |i| i + 1);
        if text[line_start..close].trim().is_empty() {
            let arm_line = text[..last.span.start as usize].rfind('\n').map_or(0, |i| i + 1);
            let indent: String = text[arm_line..].chars().take_while(|c| *c == ' ' || *c == '\t').collect();
            let mut edits = Vec::new();
            if !comma {
                edits.push((Span { start: last.span.end, end: last.span.end, ..last.span }, ",".to_string()));
            }
            let at = Span { start: line_start as u32, end: line_start as u32, ..last.span };
            edits.push((at, format!("{indent}else => drop,\n")));
            edits
        } else {
            let at = if comma {
                last.span.end as usize + after_last.find(',').unwrap_or(0) + 1
            } else {
                last.span.end as usize
            };
            let insert = if comma { " else => drop" } else { ", else => drop" };
            vec![(Span { start: at as u32, end: at as u32, ..last.span }, insert.to_string())]
        }
    }

    // ---- after all pipelines --------------------------------------------------------------------

    /// Per-event sink options and `as Schema` requirements, checked against every input.
    fn finish_sinks(&mut self) {
        let inputs = std::mem::take(&mut self.sink_inputs);
        for (edge, stage_span) in inputs {
            let Some((from, to)) = self.graph.edge_endpoints(edge) else { continue };
            let port = self.graph[edge].port;
            let ty = match port {
                Port::Errors => dead_letters(),
                _ => self.graph[from].output.clone(),
            };
            let sink_name = match &self.graph[to].kind {
                NodeKind::Sink { name, .. } => name.clone(),
                _ => continue,
            };
            let (schema, spec_exprs) = match self.names.get(&sink_name) {
                Some(Named::Sink { schema, spec_exprs, .. }) => (schema.clone(), spec_exprs.clone()),
                _ => continue,
            };
            let cursor = Cursor { node: from, port, ty: ty.clone(), describe: "the events written here".into() };
            let mut typed = Vec::new();
            for (name, e, want) in &spec_exprs {
                let before = self.diags.len();
                let t = self.expr(e, &cursor);
                if self.diags.len() > before {
                    // Point out which input made the option fail, as the option is shared.
                    for d in &mut self.diags[before..] {
                        d.secondary.push((stage_span, format!("for the events written to `{sink_name}` here")));
                    }
                }
                if !t.ty.fits(want) && t.ty != Ty::Error {
                    self.push(
                        Diagnostic::new(
                            Code::OptionType,
                            e.span,
                            format!("option `{name}` must be {}, found {}", want.a(), t.ty.a()),
                        )
                        .label(t.ty.a())
                        .secondary(stage_span, "for the events written here")
                        .maybe_help(
                            (*want == Ty::String).then(|| "convert with `... || ''` or a string function".to_string()),
                        ),
                    );
                }
                typed.push((name.clone(), t.coerce(want)));
            }
            self.graph[edge].sink_exprs = typed;
            if let Some(schema) = schema {
                self.sink_schema(&sink_name, &schema, &ty, stage_span);
            }
        }
    }

    fn sink_schema(&mut self, sink: &str, want: &Record, have: &StreamType, at: Span) {
        for f in &want.fields {
            match have.record.field(&f.name) {
                None if f.optional => {}
                None => self.push(
                    Diagnostic::new(
                        Code::SinkSchema,
                        at,
                        format!("sink `{sink}` requires field `{}`, which these events do not declare", f.name),
                    )
                    .label(format!("events without `{}`", f.name))
                    .help(format!(
                        "add `{}` to the events (a `select ... as {}`), or make it optional in the sink's schema",
                        f.name, f.name
                    )),
                ),
                Some(h) if !h.ty.fits(&f.ty) => self.push(
                    Diagnostic::new(
                        Code::SinkSchema,
                        at,
                        format!(
                            "sink `{sink}` requires `{}` to be {}, but these events have {}",
                            f.name,
                            f.ty.a(),
                            h.ty.a()
                        ),
                    )
                    .label("type differs"),
                ),
                Some(h) if h.optional && !f.optional => self.push(
                    Diagnostic::new(
                        Code::SinkSchema,
                        at,
                        format!("sink `{sink}` requires field `{}`, which may be missing here", f.name),
                    )
                    .label(format!("`{}` is optional here", f.name))
                    .help(format!("give it a default: `select *, coalesce({0}, ...) as {0}`", f.name)),
                ),
                Some(_) => {}
            }
        }
    }

    /// Cycles through `.errors` ports (`s.errors | s`). Flow cycles were reported on resolution.
    fn cycles(&mut self) {
        for scc in petgraph::algo::tarjan_scc(&self.graph) {
            let cyclic = scc.len() > 1 || scc.first().is_some_and(|n| self.graph.contains_edge(*n, *n));
            if !cyclic {
                continue;
            }
            let sink = scc.iter().find(|n| matches!(self.graph[**n].kind, NodeKind::Sink { .. })).copied();
            let Some(sink) = sink else { continue };
            let NodeKind::Sink { name, .. } = &self.graph[sink].kind else { continue };
            let name = name.clone();
            let span = self.graph[sink].span;
            self.push(
                Diagnostic::new(Code::Cycle, span, format!("`{name}.errors` feeds back into `{name}`"))
                    .label("events that fail here would come back here")
                    .help("send dead letters to a different sink, such as a file"),
            );
        }
    }

    fn unused(&mut self, modules: &'a [Module]) {
        // With errors, "unused" is usually a consequence (a misspelt reader): say nothing yet.
        if self.diags.iter().any(Diagnostic::is_error) {
            return;
        }
        let mut warnings = Vec::new();
        // Only the root file's declarations: a shared library of sinks need not use them all.
        for item in modules.iter().take(1).flat_map(|m| &m.items) {
            match item {
                Item::Source(d)
                    if !self.used_sources.contains(&d.name.name) && self.is_declared(d.span, &d.name.name) =>
                {
                    warnings.push(
                        Diagnostic::new(
                            Code::UnusedSource,
                            d.name.span,
                            format!("source `{}` feeds nothing", d.name.name),
                        )
                        .label("never read")
                        .help(format!("read it in a pipeline: `{} | <sink>`", d.name.name)),
                    )
                }
                Item::Sink(d) => {
                    let node = match self.names.get(&d.name.name) {
                        Some(Named::Sink { node: Some(n), decl, .. }) if decl.span == d.span => *n,
                        _ => continue,
                    };
                    if self.graph.edges_directed(node, petgraph::Direction::Incoming).next().is_none() {
                        warnings.push(
                            Diagnostic::new(
                                Code::UnusedSink,
                                d.name.span,
                                format!("sink `{}` receives nothing", d.name.name),
                            )
                            .label("never written"),
                        );
                    }
                }
                Item::Flow(f) if !self.used_flows.contains(&f.name.name) && self.is_declared(f.span, &f.name.name) => {
                    let ends_in_terminal = f.pipeline.stages.last().is_some_and(|s| s.kind.is_terminal());
                    if !ends_in_terminal {
                        warnings.push(
                            Diagnostic::new(
                                Code::UnusedFlow,
                                f.name.span,
                                format!("flow `{}` feeds nothing", f.name.name),
                            )
                            .label("its events go nowhere")
                            .help(format!("end it with a sink (`| <sink>`) or read it: `{} | <sink>`", f.name.name)),
                        );
                    }
                }
                _ => {}
            }
        }
        self.diags.extend(warnings);
    }

    /// Is this declaration the one registered under `name` (not a rejected duplicate)?
    fn is_declared(&self, span: Span, name: &str) -> bool {
        match self.names.get(name) {
            Some(Named::Source { decl, .. }) | Some(Named::Sink { decl, .. }) => decl.span == span,
            Some(Named::Flow { decl, .. }) => decl.span == span,
            None => false,
        }
    }

    // ---- tests and deploy -------------------------------------------------------------------------

    fn tests(&mut self, root: &Module) -> Vec<TestCase> {
        let mut out = Vec::new();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for item in &root.items {
            let Item::Test(t) = item else { continue };
            if let Some(prev) = seen.get(t.name.as_str()) {
                self.push(
                    Diagnostic::new(Code::Duplicate, t.name_span, format!("two tests are named {:?}", t.name))
                        .label("named again")
                        .secondary(*prev, "first test with this name"),
                );
            }
            seen.insert(&t.name, t.name_span);
            let mut case = TestCase { name: t.name.clone(), span: t.span, inputs: Vec::new(), expects: Vec::new() };
            for d in &t.inputs {
                if self.test_target(&d.target, true) {
                    match test_events(&d.value, true, d.span) {
                        Ok(events) => case.inputs.push((d.target.name.clone(), events)),
                        Err(span) => self.push(
                            Diagnostic::new(
                                Code::BadTest,
                                span,
                                "test input must be a JSON object, a string, or an array of them",
                            )
                            .label("not an event")
                            .help("write `input src = {\"id\": 1}`; a string is fed as a raw line"),
                        ),
                    }
                }
            }
            for d in &t.expects {
                if self.test_target(&d.target, false) {
                    match test_events(&d.value, false, d.span) {
                        Ok(events) => case.expects.push((d.target.name.clone(), events)),
                        Err(span) => self.push(
                            Diagnostic::new(Code::BadTest, span, "`expect` takes a JSON object or an array of objects")
                                .label("not an event")
                                .help("write `expect sink = [{\"id\": 1}]`, or `[]` for no events"),
                        ),
                    }
                }
            }
            out.push(case);
        }
        out
    }

    fn test_target(&mut self, target: &Ident, input: bool) -> bool {
        let want = if input { "source" } else { "sink" };
        let ok = match self.names.get(&target.name) {
            Some(Named::Source { .. }) => input,
            Some(Named::Sink { .. }) => !input,
            _ => false,
        };
        if !ok {
            let mut candidates: Vec<&str> = self
                .names
                .iter()
                .filter(
                    |(_, n)| if input { matches!(n, Named::Source { .. }) } else { matches!(n, Named::Sink { .. }) },
                )
                .map(|(k, _)| k.as_str())
                .collect();
            candidates.sort();
            let verb = if input { "input" } else { "expect" };
            let d = Diagnostic::new(
                Code::BadTest,
                target.span,
                format!("`{verb}` needs a {want}, and `{}` is not one", target.name),
            )
            .label(format!("not a {want}"));
            let suggestion = did_you_mean(&target.name, candidates.iter().copied());
            self.push(suggest(d, target.span, suggestion, ident, format!("{want}s: {}", candidates.join(", "))));
        }
        ok
    }

    fn deploy(&mut self, root: &Module) -> Option<Vec<(String, OptionValue)>> {
        let mut first: Option<&ast::DeployDecl> = None;
        for item in &root.items {
            let Item::Deploy(d) = item else { continue };
            if let Some(f) = first {
                self.push(
                    Diagnostic::new(Code::DuplicateDeploy, d.span, "a flow has one `deploy` block")
                        .label("second deploy block")
                        .secondary(f.span, "first deploy block")
                        .help("merge the options into one block"),
                );
                continue;
            }
            first = Some(d);
        }
        let d = first?;
        let specs = self.catalog.deploy_options().to_vec();
        let anchor = Span { end: d.span.start + 6, ..d.span };
        Some(self.options(&d.options, &specs, "`deploy`", anchor).0)
    }
}

/// `d` with the did-you-mean help and its fix (the name written by `write`) when there is a
/// suggestion, else with the `otherwise` help.
fn suggest(
    d: Diagnostic,
    span: Span,
    suggestion: Option<&str>,
    write: fn(&str) -> String,
    otherwise: String,
) -> Diagnostic {
    match suggestion {
        Some(s) => d.did_you_mean(span, s, write(s)),
        None => d.help(otherwise),
    }
}

/// Static option values, and per-event option expressions with their wanted type.
type CheckedOptions = (Vec<(String, OptionValue)>, Vec<(String, Expr, Ty)>);

enum FlowOut {
    Stream(Cursor),
    Terminal(Span),
    Broken,
}

/// One way two merged records differ.
enum RecordDifference {
    /// In one record only (`true`: the first).
    Missing {
        name: String,
        in_first: bool,
    },
    Type {
        name: String,
        first: Ty,
        second: Ty,
    },
    Optional {
        name: String,
        first_optional: bool,
    },
}

impl RecordDifference {
    fn describe(&self, a: &str, b: &str) -> String {
        let opt = |o: bool| if o { "optional" } else { "required" };
        match self {
            RecordDifference::Missing { name, in_first: true } => format!("`{name}` is in {a} but not in {b}"),
            RecordDifference::Missing { name, in_first: false } => format!("`{name}` is in {b} but not in {a}"),
            RecordDifference::Type { name, first, second } => {
                format!("`{name}` is {} in {a} but {} in {b}", first.a(), second.a())
            }
            RecordDifference::Optional { name, first_optional } => {
                format!("`{name}` is {} in {a} but {} in {b}", opt(*first_optional), opt(!*first_optional))
            }
        }
    }
}

/// How `b` differs from `a`, field by field (in `a`'s order, then `b`'s extra fields). A field
/// already typed as an error matches anything, so one mistake is reported once; a `null` field
/// (`select null as x`) matches only another, as the merged column has the first's type.
fn record_differences(a: &Record, b: &Record) -> Vec<RecordDifference> {
    let mut out = Vec::new();
    for fa in &a.fields {
        match b.field(&fa.name) {
            None => out.push(RecordDifference::Missing { name: fa.name.clone(), in_first: true }),
            Some(fb) if fa.ty != fb.ty && fa.ty != Ty::Error && fb.ty != Ty::Error => {
                out.push(RecordDifference::Type { name: fa.name.clone(), first: fa.ty.clone(), second: fb.ty.clone() })
            }
            Some(fb) if fa.optional != fb.optional => {
                out.push(RecordDifference::Optional { name: fa.name.clone(), first_optional: fa.optional })
            }
            Some(_) => {}
        }
    }
    for fb in &b.fields {
        if a.field(&fb.name).is_none() {
            out.push(RecordDifference::Missing { name: fb.name.clone(), in_first: false });
        }
    }
    out
}

fn dead_letters() -> StreamType {
    crate::types::dead_letter_stream()
}

/// A test's JSON as a list of events; `Err` points at the offending value.
fn test_events(v: &ast::Json, input: bool, fallback: Span) -> Result<Vec<ast::Json>, Span> {
    use ast::Json;
    let ok = |j: &Json| matches!(j, Json::Object(..)) || (input && matches!(j, Json::String(_)));
    match v {
        Json::Array(items, _) => {
            for i in items {
                if !ok(i) {
                    return Err(match i {
                        Json::Array(_, s) | Json::Object(_, s) => *s,
                        _ => array_span(v, fallback),
                    });
                }
            }
            Ok(items.clone())
        }
        j if ok(j) => Ok(vec![j.clone()]),
        _ => Err(array_span(v, fallback)),
    }
}

fn array_span(v: &ast::Json, fallback: Span) -> Span {
    match v {
        ast::Json::Array(_, s) | ast::Json::Object(_, s) => *s,
        _ => fallback,
    }
}
