//! Questions editors ask about a compiled flow: what is at an offset, where a name is declared
//! and used, what the outline is, and what may be written at the cursor. Answers are spans and
//! names from the syntax tree and the checker's [`Facts`]; no I/O and no editor protocol here.

use crate::ast::*;
use crate::catalog::Role;
use crate::check::facts::{ExprScope, Facts, FieldUse};
use crate::compile::Compilation;
use crate::plan::graph::{NodeKind, Port};
use crate::span::{FileId, Span};
use crate::types::StreamType;

/// A named thing of a flow, as references to it are matched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Symbol {
    Schema(String),
    /// A source, sink or flow: they share one namespace.
    Stream(String),
    /// A field, named by where it is declared (`None`: no text declares it, as for `.errors`
    /// records; such a field has no definition and no references).
    Field {
        name: String,
        decl: Option<Span>,
    },
    Connector {
        name: String,
        role: Role,
    },
    /// An option of a connector, or of `deploy` (`connector: None`).
    Option {
        connector: Option<(String, Role)>,
        name: String,
    },
    Function(String),
    Metadata(String),
    /// The path of an `import`, as written.
    Import(String),
}

impl Symbol {
    /// Can the user rename it (it is declared in a flow file)?
    pub fn renamable(&self) -> bool {
        matches!(self, Symbol::Schema(_) | Symbol::Stream(_) | Symbol::Field { decl: Some(_), .. })
    }
}

/// One place a symbol is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    pub span: Span,
    pub symbol: Symbol,
    /// This is the declaration.
    pub def: bool,
}

/// Every symbol occurrence of a compilation, in text order.
#[derive(Debug, Clone, Default)]
pub struct Index {
    pub occurrences: Vec<Occurrence>,
}

impl Index {
    pub fn build(c: &Compilation) -> Index {
        let mut w = Walker { out: Vec::new(), facts: &c.facts };
        for m in &c.modules {
            for item in &m.items {
                w.item(item);
            }
        }
        // Field names come from the checker, which knows what each resolved to; an expression
        // checked against several streams (a sink's per-event option) is listed once.
        for f in &c.facts.fields {
            let def = f.decl == Some(f.span);
            w.out.push(Occurrence { span: f.span, symbol: Symbol::Field { name: f.name.clone(), decl: f.decl }, def });
        }
        let mut occurrences = w.out;
        occurrences.sort_by_key(|o| (o.span.file, o.span.start, o.span.end));
        occurrences.dedup_by(|a, b| a.span == b.span && a.symbol == b.symbol);
        Index { occurrences }
    }

    /// The innermost occurrence at `offset` (a cursor just after a name still touches it).
    pub fn at(&self, file: FileId, offset: usize) -> Option<&Occurrence> {
        self.occurrences
            .iter()
            .filter(|o| o.span.file == file && (o.span.start as usize) <= offset && offset <= o.span.end as usize)
            .min_by_key(|o| (o.span.end - o.span.start, usize::from(o.span.end as usize == offset)))
    }

    pub fn references<'a>(&'a self, symbol: &'a Symbol) -> impl Iterator<Item = &'a Occurrence> + 'a {
        self.occurrences.iter().filter(move |o| &o.symbol == symbol)
    }

    pub fn definition(&self, symbol: &Symbol) -> Option<&Occurrence> {
        self.occurrences.iter().find(|o| o.def && &o.symbol == symbol)
    }
}

struct Walker<'a> {
    out: Vec<Occurrence>,
    facts: &'a Facts,
}

impl Walker<'_> {
    fn push(&mut self, span: Span, symbol: Symbol, def: bool) {
        self.out.push(Occurrence { span, symbol, def });
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Import(i) => self.push(i.path_span, Symbol::Import(i.path.clone()), false),
            Item::Schema(s) => {
                self.push(s.name.span, Symbol::Schema(s.name.name.clone()), true);
                self.record(&s.record);
            }
            Item::Source(d) => self.connector(d, Role::Source),
            Item::Sink(d) => self.connector(d, Role::Sink),
            Item::Flow(f) => {
                self.push(f.name.span, Symbol::Stream(f.name.name.clone()), true);
                self.pipeline(&f.pipeline);
            }
            Item::Pipeline(p) => self.pipeline(p),
            Item::Test(t) => {
                for d in t.inputs.iter().chain(&t.expects) {
                    self.push(d.target.span, Symbol::Stream(d.target.name.clone()), false);
                }
            }
            Item::Deploy(d) => self.options(&d.options, None),
        }
    }

    fn connector(&mut self, d: &ConnectorDecl, role: Role) {
        self.push(d.name.span, Symbol::Stream(d.name.name.clone()), true);
        self.push(d.connector.span, Symbol::Connector { name: d.connector.name.clone(), role }, false);
        self.options(&d.options, Some((d.connector.name.clone(), role)));
        match &d.schema {
            Some(SchemaRef::Named(n)) => self.push(n.span, Symbol::Schema(n.name.clone()), false),
            Some(SchemaRef::Inline(r)) => self.record(r),
            None => {}
        }
    }

    fn options(&mut self, o: &Options, connector: Option<(String, Role)>) {
        for e in &o.entries {
            self.push(e.name.span, Symbol::Option { connector: connector.clone(), name: e.name.name.clone() }, false);
            self.expr(&e.value);
        }
    }

    fn record(&mut self, r: &RecordType) {
        for f in &r.fields {
            // Declarations the checker never resolved (an unused schema) are still definitions.
            if self.facts.field_at(f.name.span).is_none() {
                let symbol = Symbol::Field { name: f.name.name.clone(), decl: Some(f.name.span) };
                self.push(f.name.span, symbol, true);
            }
            self.ty(&f.ty);
        }
    }

    fn ty(&mut self, t: &TypeExpr) {
        match &t.kind {
            TypeExprKind::Named(n) if crate::types::Ty::builtin(&n.name).is_none() => {
                self.push(n.span, Symbol::Schema(n.name.clone()), false)
            }
            TypeExprKind::Named(_) => {}
            TypeExprKind::List(inner) => self.ty(inner),
            TypeExprKind::Record(r) => self.record(r),
        }
    }

    fn pipeline(&mut self, p: &Pipeline) {
        for r in p.input.streams() {
            self.push(r.name.span, Symbol::Stream(r.name.name.clone()), false);
        }
        self.stages(&p.stages);
    }

    fn stages(&mut self, stages: &[Stage]) {
        for s in stages {
            match &s.kind {
                StageKind::Where(e) => self.expr(e),
                StageKind::Select(items) => {
                    for i in items {
                        if let SelectItem::Expr { expr, .. } = i {
                            self.expr(expr);
                        }
                    }
                }
                StageKind::Route(r) => {
                    if let Some(k) = &r.key {
                        self.expr(k);
                    }
                    for arm in &r.arms {
                        match &arm.pattern {
                            ArmPattern::When(e) => self.expr(e),
                            ArmPattern::Values(v) => v.iter().for_each(|e| self.expr(e)),
                            ArmPattern::Else(_) => {}
                        }
                        self.stages(&arm.target);
                    }
                }
                StageKind::Drop => {}
                StageKind::Sink(name) => self.push(name.span, Symbol::Stream(name.name.clone()), false),
            }
        }
    }

    fn expr(&mut self, e: &Expr) {
        visit_expr(e, &mut |e| match &e.kind {
            ExprKind::Call { name, .. } if name.name != "env" => {
                self.out.push(Occurrence { span: name.span, symbol: Symbol::Function(name.name.clone()), def: false })
            }
            ExprKind::Meta(m) => {
                self.out.push(Occurrence { span: e.span, symbol: Symbol::Metadata(m.name.clone()), def: false })
            }
            _ => {}
        });
    }
}

/// Calls `f` on `e` and every expression inside it.
pub fn visit_expr(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    f(e);
    match &e.kind {
        ExprKind::Literal(_) | ExprKind::Field(_) | ExprKind::Meta(_) | ExprKind::Error => {}
        ExprKind::Access(b, _) | ExprKind::Paren(b) => visit_expr(b, f),
        ExprKind::Call { args, .. } | ExprKind::List(args) => args.iter().for_each(|a| visit_expr(a, f)),
        ExprKind::Unary { expr, .. } | ExprKind::IsNull { expr, .. } => visit_expr(expr, f),
        ExprKind::Binary { left, right, .. } => {
            visit_expr(left, f);
            visit_expr(right, f);
        }
        ExprKind::InList { expr, list, .. } => {
            visit_expr(expr, f);
            list.iter().for_each(|a| visit_expr(a, f));
        }
        ExprKind::Between { expr, low, high, .. } => {
            visit_expr(expr, f);
            visit_expr(low, f);
            visit_expr(high, f);
        }
        ExprKind::Like { expr, pattern, .. } => {
            visit_expr(expr, f);
            visit_expr(pattern, f);
        }
        ExprKind::Case { operand, whens, otherwise } => {
            if let Some(o) = operand {
                visit_expr(o, f);
            }
            for (w, t) in whens {
                visit_expr(w, f);
                visit_expr(t, f);
            }
            if let Some(o) = otherwise {
                visit_expr(o, f);
            }
        }
    }
}

// ---- facts about names ----------------------------------------------------------------------

/// What a source, sink or flow is, found by its name.
#[derive(Debug, Clone, Copy)]
pub enum StreamDecl<'a> {
    Source(&'a ConnectorDecl),
    Sink(&'a ConnectorDecl),
    Flow(&'a FlowDecl),
}

pub fn stream_decl<'a>(c: &'a Compilation, name: &str) -> Option<StreamDecl<'a>> {
    c.modules.iter().flat_map(|m| &m.items).find_map(|i| match i {
        Item::Source(d) if d.name.name == name => Some(StreamDecl::Source(d)),
        Item::Sink(d) if d.name.name == name => Some(StreamDecl::Sink(d)),
        Item::Flow(f) if f.name.name == name => Some(StreamDecl::Flow(f)),
        _ => None,
    })
}

pub fn schema_decl<'a>(c: &'a Compilation, name: &str) -> Option<&'a SchemaDecl> {
    c.modules.iter().flat_map(|m| &m.items).find_map(|i| match i {
        Item::Schema(s) if s.name.name == name => Some(s),
        _ => None,
    })
}

/// Type and optionality of a field, from the checker's facts about its declaration.
pub fn field_info(c: &Compilation, span: Span, decl: Option<Span>) -> Option<&FieldUse> {
    c.facts.field_at(span).or_else(|| decl.and_then(|d| c.facts.field_at(d)))
}

/// Where a field was declared, in words: "schema `Order`", "source `orders`", "the select".
pub fn field_owner(c: &Compilation, decl: Span) -> Option<String> {
    let within = |s: Span| s.file == decl.file && s.start <= decl.start && decl.end <= s.end;
    for item in c.modules.iter().flat_map(|m| &m.items) {
        if !within(item.span()) {
            continue;
        }
        return Some(match item {
            Item::Schema(s) => format!("schema `{}`", s.name.name),
            Item::Source(d) => format!("source `{}`", d.name.name),
            Item::Sink(d) => format!("sink `{}`", d.name.name),
            Item::Flow(f) => format!("a `select` in flow `{}`", f.name.name),
            _ => "a `select`".to_string(),
        });
    }
    None
}

/// The streams written into the sink named `name` (one per pipeline or arm writing to it).
pub fn sink_inputs(c: &Compilation, name: &str) -> Vec<StreamType> {
    let Some(flow) = &c.flow else { return Vec::new() };
    let g = &flow.graph;
    let mut out = Vec::new();
    for n in g.node_indices() {
        if !matches!(&g[n].kind, NodeKind::Sink { name: s, .. } if s == name) {
            continue;
        }
        for e in g.edges_directed(n, petgraph::Direction::Incoming) {
            use petgraph::visit::EdgeRef;
            out.push(match e.weight().port {
                Port::Errors => crate::types::dead_letter_stream(),
                _ => g[e.source()].output.clone(),
            });
        }
    }
    out
}

/// The events a named source or flow produces.
pub fn stream_output(c: &Compilation, name: &str) -> Option<StreamType> {
    let flow = c.flow.as_ref()?;
    let g = &flow.graph;
    match stream_decl(c, name)? {
        StreamDecl::Source(_) => g
            .node_indices()
            .find(|n| matches!(&g[*n].kind, NodeKind::Source { name: s, .. } if s == name))
            .map(|n| g[n].output.clone()),
        StreamDecl::Flow(f) => {
            // The flow's last stage is the node with the largest span inside the declaration.
            let stage = f.pipeline.stages.last()?;
            g.node_indices().find(|n| g[*n].span == stage.span).map(|n| g[n].output.clone())
        }
        StreamDecl::Sink(_) => None,
    }
}

/// Sources and sinks whose `.errors` port nothing reads: their failed events are only counted
/// and logged. Returns the declarations of the root file.
pub fn unwired_errors(c: &Compilation) -> Vec<(&ConnectorDecl, Role)> {
    let mut read: Vec<&str> = Vec::new();
    for m in &c.modules {
        for item in &m.items {
            let p = match item {
                Item::Pipeline(p) => p,
                Item::Flow(f) => &f.pipeline,
                _ => continue,
            };
            for r in p.input.streams().iter().filter(|r| r.errors.is_some()) {
                read.push(&r.name.name);
            }
        }
    }
    let Some(root) = c.modules.first() else { return Vec::new() };
    root.items
        .iter()
        .filter_map(|i| match i {
            Item::Source(d) => Some((d, Role::Source)),
            Item::Sink(d) => Some((d, Role::Sink)),
            _ => None,
        })
        .filter(|(d, _)| !read.contains(&d.name.name.as_str()))
        .collect()
}

/// Sinks already receiving some `.errors` port: where dead letters go in this flow.
pub fn dead_letter_sinks(c: &Compilation) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in c.modules.iter().flat_map(|m| &m.items) {
        let p = match item {
            Item::Pipeline(p) => p,
            Item::Flow(f) => &f.pipeline,
            _ => continue,
        };
        if p.input.streams().iter().any(|r| r.errors.is_some())
            && let Some(Stage { kind: StageKind::Sink(s), .. }) = p.stages.last()
            && !out.contains(&s.name)
        {
            out.push(s.name.clone());
        }
    }
    out
}

// ---- outline ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlineKind {
    Import,
    Schema,
    Field,
    Source,
    Sink,
    Flow,
    Route,
    Pipeline,
    Test,
    Deploy,
}

/// One entry of a file's outline.
#[derive(Debug, Clone)]
pub struct OutlineItem {
    pub name: String,
    pub detail: String,
    pub kind: OutlineKind,
    /// The whole construct.
    pub span: Span,
    /// Its name (what an editor selects).
    pub name_span: Span,
    pub children: Vec<OutlineItem>,
}

/// The outline of one parsed file.
pub fn outline(module: &Module, text: &str) -> Vec<OutlineItem> {
    let snippet = |s: Span| text.get(s.range()).unwrap_or("").to_string();
    let first_line = |s: Span| {
        let t = snippet(s);
        let line = t.lines().next().unwrap_or("").trim().to_string();
        if line.chars().count() > 60 { format!("{}…", line.chars().take(60).collect::<String>()) } else { line }
    };
    let item = |name: String, detail: String, kind, span, name_span| OutlineItem {
        name,
        detail,
        kind,
        span,
        name_span,
        children: Vec::new(),
    };
    fn fields(r: &RecordType, text: &str) -> Vec<OutlineItem> {
        r.fields
            .iter()
            .map(|f| OutlineItem {
                name: f.name.name.clone(),
                detail: text.get(f.ty.span.range()).unwrap_or("").to_string(),
                kind: OutlineKind::Field,
                span: f.span,
                name_span: f.name.span,
                children: match &f.ty.kind {
                    TypeExprKind::Record(r) => fields(r, text),
                    _ => Vec::new(),
                },
            })
            .collect()
    }
    let mut out = Vec::new();
    for i in &module.items {
        out.push(match i {
            Item::Import(im) => item(im.path.clone(), "import".into(), OutlineKind::Import, im.span, im.path_span),
            Item::Schema(s) => OutlineItem {
                children: fields(&s.record, text),
                ..item(s.name.name.clone(), "schema".into(), OutlineKind::Schema, s.span, s.name.span)
            },
            Item::Source(d) | Item::Sink(d) => {
                let (kind, word) = if matches!(i, Item::Source(_)) {
                    (OutlineKind::Source, "source")
                } else {
                    (OutlineKind::Sink, "sink")
                };
                let schema = match &d.schema {
                    Some(SchemaRef::Named(n)) => format!(" as {}", n.name),
                    Some(SchemaRef::Inline(_)) => " as { … }".into(),
                    None => String::new(),
                };
                let children = match &d.schema {
                    Some(SchemaRef::Inline(r)) => fields(r, text),
                    _ => Vec::new(),
                };
                OutlineItem {
                    children,
                    ..item(
                        d.name.name.clone(),
                        format!("{word} = {}{schema}", d.connector.name),
                        kind,
                        d.span,
                        d.name.span,
                    )
                }
            }
            Item::Flow(f) => item(f.name.name.clone(), "flow".into(), OutlineKind::Flow, f.span, f.name.span),
            Item::Pipeline(p) if p.route_statement => {
                item(first_line(p.span), "route".into(), OutlineKind::Route, p.span, p.input.span())
            }
            Item::Pipeline(p) => {
                item(first_line(p.span), "pipeline".into(), OutlineKind::Pipeline, p.span, p.input.span())
            }
            Item::Test(t) => item(t.name.clone(), "test".into(), OutlineKind::Test, t.span, t.name_span),
            Item::Deploy(d) => {
                let name_span = Span { end: d.span.start + 6, ..d.span };
                item("deploy".into(), String::new(), OutlineKind::Deploy, d.span, name_span)
            }
        });
    }
    out
}

// ---- completion ---------------------------------------------------------------------------------

/// The name put at the cursor to make the text around it parse: a plain identifier no flow
/// would use.
pub const CURSOR: &str = "__phoenix_cursor__";

/// What may be written at the cursor, found by parsing the text with [`CURSOR`] inserted there.
#[derive(Debug, Clone)]
pub enum Slot {
    /// Where an item starts (or a pipeline's input): item keywords and streams.
    Item,
    /// A stream a pipeline or route statement reads: sources, flows, `.errors` ports.
    Stream,
    /// A stage after `|`: sinks, `drop`, `where`, `select`, `route`.
    Stage,
    /// The connector after `source x =` or `sink x =`.
    Connector(Role),
    /// An option name in a connector's block (`None`: the `deploy` block), with those given.
    OptionName { connector: Option<(String, Role)>, given: Vec<String> },
    /// An option's value.
    OptionValue { connector: Option<(String, Role)>, name: String },
    /// A field in an expression; `path` holds the segments before the cursor (`customer.`).
    Field { scope: Box<ExprScope>, path: Vec<String> },
    /// `@` metadata.
    Metadata { scope: Box<ExprScope> },
    /// A type in a schema.
    Type,
    /// The schema after `as`.
    Schema,
    /// A test's `input` (sources) or `expect` (sinks).
    TestTarget { input: bool },
    /// A value arm of a `route ... by key`: the values of other arms and comparisons with the
    /// same key, as written.
    ArmValue { values: Vec<String> },
}

/// The text with the cursor marker inserted so that it parses, and the marker's offset. Tries
/// the marker alone, then as an option (`name = 0`), then as an arm value (`'…' => drop`); each
/// in the whole text and then with the rest of the current item cut off and its brackets closed
/// (for the middle of an edit).
pub fn with_cursor(text: &str, offset: usize) -> Option<(String, usize)> {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let (before, after) = text.split_at(offset);
    let rest = next_item(after);
    let closers = closers(before);
    let forms = [CURSOR.to_string(), format!("{CURSOR} = 0"), format!("'{CURSOR}' => drop")];
    for form in &forms {
        let at = offset + if form.starts_with('\'') { 1 } else { 0 };
        // The rest of the file may be broken too: then only what comes before the cursor counts.
        let candidates = [
            format!("{before}{form}{after}"),
            format!("{before}{form}{closers}\n{rest}"),
            format!("{before}{form}{closers}"),
        ];
        for candidate in candidates {
            if crate::parser::parse(FileId(0), &candidate).is_ok() {
                return Some((candidate, at));
            }
        }
    }
    None
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The text from the next line that starts a new item (a letter at column 0).
fn next_item(after: &str) -> &str {
    let mut pos = after.find('\n').map_or(after.len(), |i| i + 1);
    while pos < after.len() {
        let line = &after[pos..];
        if line.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '`') {
            return line;
        }
        pos += line.find('\n').map_or(line.len(), |i| i + 1);
    }
    ""
}

/// The brackets open at the end of `before`, closed (strings and comments skipped).
fn closers(before: &str) -> String {
    let b = before.as_bytes();
    let mut stack = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = before[i..].find('\n').map_or(b.len(), |e| i + e);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = before[i + 2..].find("*/").map_or(b.len(), |e| i + e + 4);
                continue;
            }
            q @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'{' => stack.push('}'),
            b'(' => stack.push(')'),
            b'[' => stack.push(']'),
            b'}' | b')' | b']' => {
                stack.pop();
            }
            _ => {}
        }
        i += 1;
    }
    stack.iter().rev().collect()
}

/// What may be written at `offset` of `file` in a compilation of text made by [`with_cursor`].
pub fn slot(c: &Compilation, file: FileId, offset: usize) -> Option<Slot> {
    let at = |s: Span| s.file == file && (s.start as usize) <= offset && offset < s.end as usize;
    let module = c.modules.iter().find(|m| m.items.first().is_some_and(|i| i.span().file == file))?;
    let item = module.items.iter().find(|i| at(i.span()))?;
    let mut finder = SlotFinder { c, at: &at };
    finder.item(item)
}

struct SlotFinder<'a> {
    c: &'a Compilation,
    at: &'a dyn Fn(Span) -> bool,
}

impl SlotFinder<'_> {
    fn item(&mut self, item: &Item) -> Option<Slot> {
        match item {
            Item::Schema(s) => self.record(&s.record),
            Item::Source(d) => self.connector(d, Role::Source),
            Item::Sink(d) => self.connector(d, Role::Sink),
            Item::Flow(f) => self.pipeline(&f.pipeline, false),
            Item::Pipeline(p) => self.pipeline(p, !p.route_statement),
            Item::Test(t) => t
                .inputs
                .iter()
                .map(|d| (d, true))
                .chain(t.expects.iter().map(|d| (d, false)))
                .find_map(|(d, input)| (self.at)(d.target.span).then_some(Slot::TestTarget { input })),
            Item::Deploy(d) => self.options(&d.options, None),
            Item::Import(_) => None,
        }
    }

    fn record(&mut self, r: &RecordType) -> Option<Slot> {
        r.fields.iter().find(|f| (self.at)(f.span)).and_then(|f| self.ty(&f.ty))
    }

    fn ty(&mut self, t: &TypeExpr) -> Option<Slot> {
        match &t.kind {
            TypeExprKind::Named(n) if (self.at)(n.span) => Some(Slot::Type),
            TypeExprKind::Named(_) => None,
            TypeExprKind::List(inner) => self.ty(inner),
            TypeExprKind::Record(r) => self.record(r),
        }
    }

    fn connector(&mut self, d: &ConnectorDecl, role: Role) -> Option<Slot> {
        if (self.at)(d.connector.span) {
            return Some(Slot::Connector(role));
        }
        match &d.schema {
            Some(SchemaRef::Named(n)) if (self.at)(n.span) => return Some(Slot::Schema),
            Some(SchemaRef::Inline(r)) if (self.at)(r.span) => return self.record(r),
            _ => {}
        }
        self.options(&d.options, Some((d.connector.name.clone(), role)))
    }

    fn options(&mut self, o: &Options, connector: Option<(String, Role)>) -> Option<Slot> {
        let entry = o.entries.iter().find(|e| (self.at)(e.span))?;
        if (self.at)(entry.name.span) {
            let given = o.entries.iter().filter(|e| e.span != entry.span).map(|e| e.name.name.clone()).collect();
            return Some(Slot::OptionName { connector, given });
        }
        // A per-event option was checked against the events written to the sink.
        if let Some(s) = self.expr(&entry.value) {
            return Some(s);
        }
        Some(Slot::OptionValue { connector, name: entry.name.name.clone() })
    }

    fn pipeline(&mut self, p: &Pipeline, statement: bool) -> Option<Slot> {
        if p.input.streams().iter().any(|r| (self.at)(r.name.span)) {
            return Some(if statement && p.stages.is_empty() { Slot::Item } else { Slot::Stream });
        }
        self.stages(&p.stages)
    }

    fn stages(&mut self, stages: &[Stage]) -> Option<Slot> {
        let stage = stages.iter().find(|s| (self.at)(s.span))?;
        match &stage.kind {
            StageKind::Sink(_) => Some(Slot::Stage),
            StageKind::Where(e) => self.expr(e),
            StageKind::Select(items) => items.iter().find_map(|i| match i {
                SelectItem::Expr { expr, .. } => self.expr(expr),
                SelectItem::Star(_) => None,
            }),
            StageKind::Route(r) => {
                if let Some(s) = r.key.as_ref().and_then(|k| self.expr(k)) {
                    return Some(s);
                }
                let arm = r.arms.iter().find(|a| (self.at)(a.span))?;
                match &arm.pattern {
                    ArmPattern::When(e) if (self.at)(e.span) => return self.expr(e),
                    ArmPattern::Values(v) if v.iter().any(|e| (self.at)(e.span)) => {
                        let key = r.key.as_ref()?;
                        return Some(Slot::ArmValue { values: self.values_for(key) });
                    }
                    _ => {}
                }
                self.stages(&arm.target)
            }
            StageKind::Drop => None,
        }
    }

    /// Literals compared with an expression like `key` anywhere in the flow: arms of routes by
    /// the same key, `=` and `in` comparisons.
    fn values_for(&self, key: &Expr) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |e: &Expr, c: &Compilation| {
            if let ExprKind::Literal(l) = &e.unparen().kind
                && !matches!(l, Literal::Null)
            {
                let text = c.sources.snippet(e.span).to_string();
                if !text.contains(CURSOR) && !out.contains(&text) {
                    out.push(text);
                }
            }
        };
        let c = self.c;
        let mut visit_stages = Vec::new();
        for item in c.modules.iter().flat_map(|m| &m.items) {
            match item {
                Item::Pipeline(p) => visit_stages.push(&p.stages),
                Item::Flow(f) => visit_stages.push(&f.pipeline.stages),
                _ => {}
            }
        }
        while let Some(stages) = visit_stages.pop() {
            for s in stages {
                let mut exprs: Vec<&Expr> = Vec::new();
                match &s.kind {
                    StageKind::Where(e) => exprs.push(e),
                    StageKind::Route(r) => {
                        for arm in &r.arms {
                            match &arm.pattern {
                                ArmPattern::Values(v) if r.key.as_ref().is_some_and(|k| k.same_as(key)) => {
                                    v.iter().for_each(|e| add(e, c))
                                }
                                ArmPattern::When(e) => exprs.push(e),
                                _ => {}
                            }
                            visit_stages.push(&arm.target);
                        }
                    }
                    _ => {}
                }
                for e in exprs {
                    visit_expr(e, &mut |e| match &e.kind {
                        ExprKind::Binary { op: BinaryOp::Eq, left, right } => {
                            if left.same_as(key) {
                                add(right, c);
                            } else if right.same_as(key) {
                                add(left, c);
                            }
                        }
                        ExprKind::InList { expr, list, negated: false } if expr.same_as(key) => {
                            list.iter().for_each(|i| add(i, c))
                        }
                        _ => {}
                    });
                }
            }
        }
        out
    }

    fn expr(&mut self, e: &Expr) -> Option<Slot> {
        if !(self.at)(e.span) {
            return None;
        }
        let mut found: Option<Slot> = None;
        let scope = self.c.facts.scope_at(e.span.file, e.span.start as usize).filter(|s| s.span == e.span).cloned();
        let scope = scope.or_else(|| self.c.facts.scopes.iter().find(|s| s.span == e.span).cloned());
        visit_expr(e, &mut |x| {
            if found.is_some() {
                return;
            }
            match &x.kind {
                ExprKind::Field(path) => {
                    if let Some(k) = path.iter().position(|i| (self.at)(i.span))
                        && let Some(s) = &scope
                    {
                        let path = path[..k].iter().map(|i| i.name.clone()).collect();
                        found = Some(Slot::Field { scope: Box::new(s.clone()), path });
                    }
                }
                ExprKind::Meta(m) if (self.at)(m.span) || (self.at)(x.span) => {
                    if let Some(s) = &scope {
                        found = Some(Slot::Metadata { scope: Box::new(s.clone()) });
                    }
                }
                _ => {}
            }
        });
        found
    }
}

/// The fields of `stream` reachable through `path` (`customer` → the customer record's fields).
pub fn fields_at<'a>(stream: &'a StreamType, path: &[String]) -> Vec<&'a crate::types::RecordField> {
    let mut record: &crate::types::Record = &stream.record;
    for seg in path {
        match record.field(seg).map(|f| &f.ty) {
            Some(crate::types::Ty::Record(r)) => record = r,
            _ => return Vec::new(),
        }
    }
    record.fields.iter().collect()
}
