//! `phoenix fmt`: one canonical layout for a `.phx` file, and [`dump`], a span-free view of the
//! syntax tree for golden parse tests.
//!
//! Comments are trivia in the grammar, so they never reach the tree. The formatter finds them in
//! the text itself and re-attaches them by position while printing: a comment goes on its own line
//! before the first line-starting construct (item, field, option, stage on its own line, route
//! arm, test statement, closing brace) that begins after it, or stays at the end of a line when it
//! followed that line's construct on the same source line. Every layout decision depends only on
//! the tree and on where comments sit relative to it, which is what keeps formatting idempotent.

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::span::{FileId, Span};

/// Lines longer than this are broken where the layout allows it.
const MAX_WIDTH: usize = 100;

/// Parses `text` and prints it in canonical layout, keeping every comment.
pub fn format(text: &str) -> Result<String, Vec<Diagnostic>> {
    crate::stack::with_room(|| {
        let module = crate::parser::parse(FileId(0), text)?;
        let mut printer = Printer::new(text);
        printer.module(&module);
        Ok(printer.out)
    })
}

// ---------------------------------------------------------------------------------------------
// Comments
// ---------------------------------------------------------------------------------------------

/// A comment's byte range in the source (a line comment without its trailing whitespace).
#[derive(Debug, Clone, Copy)]
struct Comment {
    start: usize,
    end: usize,
}

/// Finds the comments pest skipped: outside string literals and quoted identifiers, which are the
/// only tokens that can contain `//` or `/*`.
fn scan_comments(src: &str) -> Vec<Comment> {
    let b = src.as_bytes();
    let mut comments = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let start = i;
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                // Trailing blanks (the `\r` of CRLF files) are not part of the comment's text.
                let end = start + src.get(start..i).map_or(0, |s| s.trim_end_matches(is_space).len());
                comments.push(Comment { start, end });
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let start = i;
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(b.len());
                comments.push(Comment { start, end: i });
            }
            quote @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != quote {
                    // Quoted identifiers have no escapes; strings do.
                    if b[i] == b'\\' && quote != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    comments
}

/// The grammar's `WHITESPACE`, apart from newlines.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\u{FEFF}')
}

// ---------------------------------------------------------------------------------------------
// The printer
// ---------------------------------------------------------------------------------------------

struct Printer<'a> {
    src: &'a str,
    comments: Vec<Comment>,
    emitted: Vec<bool>,
    /// Every comment before this index has been emitted.
    first_pending: usize,
    out: String,
    indent: usize,
    /// Source offset of the end of what has been printed, for finding blank lines in the source.
    last_end: usize,
    /// False at the start of the file, right after a `{` line and right after a blank line.
    blank_ok: bool,
}

impl<'a> Printer<'a> {
    fn new(src: &'a str) -> Self {
        let comments = scan_comments(src);
        Printer {
            src,
            emitted: vec![false; comments.len()],
            comments,
            first_pending: 0,
            out: String::with_capacity(src.len() + src.len() / 8),
            indent: 0,
            last_end: 0,
            blank_ok: false,
        }
    }

    // ---- output primitives --------------------------------------------------------------------

    fn push(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn start_line(&mut self) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
    }

    fn newline(&mut self) {
        self.out.push('\n');
        self.blank_ok = true;
    }

    fn blank_line(&mut self) {
        if self.blank_ok {
            self.out.push('\n');
            self.blank_ok = false;
        }
    }

    /// Width of the current output line so far, in characters.
    fn column(&self) -> usize {
        self.out.rsplit('\n').next().map_or(0, |line| line.chars().count())
    }

    /// Whether `s` still fits on the current line.
    fn fits(&self, s: &str) -> bool {
        self.column() + s.chars().count() <= MAX_WIDTH
    }

    // ---- comments -----------------------------------------------------------------------------

    fn pending(&self) -> impl Iterator<Item = (usize, Comment)> + '_ {
        (self.first_pending..self.comments.len()).filter(|&i| !self.emitted[i]).map(|i| (i, self.comments[i]))
    }

    /// Whether a comment not yet printed starts inside `start..end`.
    fn has_comment_in(&self, start: usize, end: usize) -> bool {
        self.pending().take_while(|(_, c)| c.start < end).any(|(_, c)| c.start >= start)
    }

    fn has_comment_in_span(&self, span: Span) -> bool {
        self.has_comment_in(span.start as usize, self.end_of(span))
    }

    fn emit_comment(&mut self, i: usize) {
        let c = self.comments[i];
        self.emitted[i] = true;
        while self.emitted.get(self.first_pending) == Some(&true) {
            self.first_pending += 1;
        }
        self.out.push_str(self.src.get(c.start..c.end).unwrap_or_default());
        self.last_end = self.last_end.max(c.end);
    }

    /// Prints the comments that start before `pos`, each on its own line; with `blank_lines`,
    /// a blank line in the source before a comment is kept (one at most).
    fn comments_before(&mut self, pos: usize, blank_lines: bool) {
        loop {
            let Some((i, c)) = self.pending().next().filter(|(_, c)| c.start < pos) else { break };
            if blank_lines && self.blank_between(self.last_end, c.start) {
                self.blank_line();
            }
            self.start_line();
            self.emit_comment(i);
            self.newline();
        }
    }

    /// Starts the line of a construct that begins at source offset `start`: its leading comments
    /// first, then (with `blank_lines`) a blank line if the source had one before it.
    fn line(&mut self, start: usize, blank_lines: bool) {
        self.comments_before(start, blank_lines);
        if blank_lines && self.blank_between(self.last_end, start) {
            self.blank_line();
        }
        self.last_end = self.last_end.max(start);
        self.start_line();
    }

    /// Ends the line of a construct that ends at source offset `end`, keeping the comments that
    /// followed it on the same source line (separated by nothing but blanks, `,` or `;`).
    fn end_line(&mut self, end: usize) {
        let mut at = end;
        loop {
            let Some((i, c)) = self.pending().find(|(_, c)| c.start >= at) else { break };
            let gap = self.src.get(at..c.start).unwrap_or("\n");
            if !gap.chars().all(|ch| matches!(ch, ' ' | '\t' | ',' | ';')) {
                break;
            }
            self.push("  ");
            self.emit_comment(i);
            at = c.end;
        }
        self.last_end = self.last_end.max(end);
        self.newline();
    }

    /// Ends a line that closes with `{` and indents what follows.
    fn open(&mut self) {
        self.newline();
        self.indent += 1;
        self.blank_ok = false;
    }

    /// Prints the comments left inside a block that ends at `end`, then its `}` (without ending
    /// the line: a `,` or more may follow).
    fn close(&mut self, end: usize) {
        self.comments_before(end, true);
        self.indent = self.indent.saturating_sub(1);
        self.start_line();
        self.push("}");
    }

    /// Where a construct really ends. Pest spans of rules that end in an optional or repeated
    /// part also cover the comments skipped while looking for it; those belong to what follows.
    fn end_of(&self, span: Span) -> usize {
        let start = span.start as usize;
        let mut end = span.end as usize;
        loop {
            let text = self.src.get(start..end).unwrap_or_default();
            end = start + text.trim_end_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}').len();
            // The first comment ending at or after `end`: the span ends in it or right after it.
            let i = self.comments.partition_point(|c| c.end < end);
            match self.comments.get(i) {
                Some(c) if c.start < end && c.start >= start => end = c.start,
                _ => return end,
            }
        }
    }

    /// Whether the source has an empty line between `from` and `to` (comments count as text).
    fn blank_between(&self, from: usize, to: usize) -> bool {
        let b = self.src.as_bytes();
        let to = to.min(b.len());
        let mut ci = self.comments.partition_point(|c| c.end <= from);
        let mut newlines = 0;
        let mut i = from;
        while i < to {
            while self.comments.get(ci).is_some_and(|c| c.end <= i) {
                ci += 1;
            }
            if let Some(c) = self.comments.get(ci).filter(|c| c.start <= i) {
                newlines = 0;
                i = c.end;
                continue;
            }
            match b[i] {
                b'\n' => {
                    newlines += 1;
                    if newlines >= 2 {
                        return true;
                    }
                }
                b' ' | b'\t' | b'\r' => {}
                _ => newlines = 0,
            }
            i += 1;
        }
        false
    }

    // ---- items --------------------------------------------------------------------------------

    fn module(&mut self, module: &Module) {
        let mut prev: Option<&Item> = None;
        for item in &module.items {
            let span = item.span();
            if let Some(prev) = prev {
                // Imports and connector declarations may stay in tight groups; everything else is
                // separated by one blank line.
                let grouped = matches!(
                    (prev, item),
                    (Item::Import(_), Item::Import(_))
                        | (Item::Source(_) | Item::Sink(_), Item::Source(_) | Item::Sink(_))
                ) && !self.blank_between(self.end_of(prev.span()), span.start as usize);
                if !grouped {
                    self.blank_line();
                }
            }
            self.line(span.start as usize, true);
            self.item(item);
            prev = Some(item);
        }
        self.comments_before(usize::MAX, true);
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Import(i) => {
                self.push("import ");
                self.push(&string_lit(&i.path, '"'));
                self.end_line(self.end_of(i.span));
            }
            Item::Schema(s) => {
                self.push("schema ");
                self.push(&ident(&s.name.name));
                self.push(" ");
                self.record_broken(&s.record);
                self.end_line(self.end_of(s.span));
            }
            Item::Source(c) => self.connector("source", c),
            Item::Sink(c) => self.connector("sink", c),
            Item::Flow(f) => self.flow(f),
            Item::Pipeline(p) => self.pipeline_item(p),
            Item::Test(t) => self.test(t),
            Item::Deploy(d) => {
                let flat = format!("deploy {}", options_flat(&d.options));
                if !self.options_have_comments(d.span.start as usize, &d.options) && self.fits(&flat) {
                    self.push(&flat);
                } else {
                    self.push("deploy ");
                    self.options_broken(&d.options);
                }
                self.end_line(self.end_of(d.span));
            }
        }
    }

    /// Whether comments sit between `from` and the end of an option block, which forces the block
    /// onto several lines (the only place they can be printed).
    fn options_have_comments(&self, from: usize, options: &Options) -> bool {
        options.span.is_some_and(|s| self.has_comment_in(from, self.end_of(s)))
    }

    /// `source name = connector { options } as Schema`: one line when it fits; otherwise the
    /// options one per line, and an inline schema broken too if it still does not fit.
    fn connector(&mut self, keyword: &str, c: &ConnectorDecl) {
        let head = format!("{keyword} {} = {}", ident(&c.name.name), ident(&c.connector.name));
        let options = c.options.span.map(|_| options_flat(&c.options));
        let option_comments = self.options_have_comments(c.span.start as usize, &c.options);
        let inline_schema = match &c.schema {
            Some(SchemaRef::Inline(r)) => Some(r),
            _ => None,
        };
        let schema_comments = inline_schema.is_some_and(|r| self.has_comment_in_span(r.span));

        let mut flat = head.clone();
        if let Some(o) = &options {
            flat.push(' ');
            flat.push_str(o);
        }
        if let Some(s) = &c.schema {
            flat.push_str(" as ");
            flat.push_str(&schema_ref_flat(s));
        }
        if !option_comments && !schema_comments && self.fits(&flat) {
            self.push(&flat);
            self.end_line(self.end_of(c.span));
            return;
        }

        self.push(&head);
        if let Some(o) = &options {
            // A long inline schema alone breaks; short options stay on the first line.
            let keep_flat = !option_comments
                && (c.options.entries.is_empty() || (inline_schema.is_some() && self.fits(&format!(" {o} as {{"))));
            self.push(" ");
            if keep_flat {
                self.push(o);
            } else {
                self.options_broken(&c.options);
            }
        }
        match &c.schema {
            Some(SchemaRef::Named(n)) => {
                self.push(" as ");
                self.push(&ident(&n.name));
            }
            Some(SchemaRef::Inline(r)) => {
                self.push(" as ");
                self.record(r, "");
            }
            None => {}
        }
        self.end_line(self.end_of(c.span));
    }

    /// `{` one `name = value,` per line `}`.
    fn options_broken(&mut self, options: &Options) {
        let end = options.span.map_or(0, |s| self.end_of(s));
        if options.entries.is_empty() && !self.has_comment_in(options.span.map_or(0, |s| s.start as usize), end) {
            self.push("{}");
            return;
        }
        self.push("{");
        self.open();
        for entry in &options.entries {
            self.line(entry.span.start as usize, true);
            self.push(&option_flat(entry));
            self.push(",");
            self.end_line(self.end_of(entry.span));
        }
        self.close(end);
    }

    /// A record type written inline: flat when it fits (followed by `tail`), else broken.
    fn record(&mut self, record: &RecordType, tail: &str) {
        let flat = record_flat(record);
        if !self.has_comment_in_span(record.span) && self.fits(&format!("{flat}{tail}")) {
            self.push(&flat);
        } else {
            self.record_broken(record);
        }
    }

    /// `{` one `name: type,` per line `}`.
    fn record_broken(&mut self, record: &RecordType) {
        if record.fields.is_empty() && !self.has_comment_in_span(record.span) {
            self.push("{}");
            return;
        }
        self.push("{");
        self.open();
        for field in &record.fields {
            self.line(field.span.start as usize, true);
            self.push(&field_name(&field.name.name));
            self.push(": ");
            self.type_expr(&field.ty, ",");
            self.push(",");
            self.end_line(self.end_of(field.span));
        }
        self.close(self.end_of(record.span));
    }

    fn type_expr(&mut self, ty: &TypeExpr, tail: &str) {
        let mark = if ty.optional { "?" } else { "" };
        match &ty.kind {
            TypeExprKind::Named(n) => self.push(&ident(&n.name)),
            TypeExprKind::List(inner) => {
                self.push("list<");
                self.type_expr(inner, &format!(">{mark}{tail}"));
                self.push(">");
            }
            TypeExprKind::Record(r) => self.record(r, &format!("{mark}{tail}")),
        }
        self.push(mark);
    }

    /// `flow name = input | stages` on one line when it fits; otherwise the pipeline goes below,
    /// indented, one stage per line.
    fn flow(&mut self, flow: &FlowDecl) {
        let head = format!("flow {} =", ident(&flow.name.name));
        let p = &flow.pipeline;
        let forced = self.has_comment_in(flow.span.start as usize, last_line_start(p)) || route_before_end(&p.stages);
        if !forced && self.fits(&format!("{head} {}", pipeline_first_line(p))) {
            self.push(&head);
            self.push(" ");
            self.pipeline_flat(p);
            self.end_line(self.end_of(flow.span));
            return;
        }
        self.push(&head);
        self.newline();
        self.indent += 1;
        self.line(p.input.span().start as usize, false);
        self.pipeline_broken(p);
        self.indent -= 1;
    }

    fn pipeline_item(&mut self, p: &Pipeline) {
        if p.route_statement
            && let [Stage { kind: StageKind::Route(route), .. }] = p.stages.as_slice()
        {
            self.push(&route_header(route, Some(&p.input)));
            self.route_body(route);
            self.end_line(self.end_of(p.span));
            return;
        }
        let forced = self.has_comment_in(p.span.start as usize, last_line_start(p)) || route_before_end(&p.stages);
        if !forced && self.fits(&pipeline_first_line(p)) {
            self.pipeline_flat(p);
            self.end_line(self.end_of(p.span));
        } else {
            self.pipeline_broken(p);
        }
    }

    /// `input | stage | ...` on the current line (a final route's arms below it).
    fn pipeline_flat(&mut self, p: &Pipeline) {
        self.push(&input(&p.input));
        for stage in &p.stages {
            self.push(" | ");
            self.stage(stage);
        }
    }

    /// The input on the current line, then each stage on its own line as `| stage`, one level
    /// deeper. Ends its last line.
    fn pipeline_broken(&mut self, p: &Pipeline) {
        self.push(&input(&p.input));
        self.end_line(self.end_of(p.input.span()));
        self.indent += 1;
        for stage in &p.stages {
            self.line(stage.span.start as usize, false);
            self.push("| ");
            self.stage(stage);
            self.end_line(self.end_of(stage.span));
        }
        self.indent -= 1;
    }

    fn stage(&mut self, stage: &Stage) {
        match &stage.kind {
            StageKind::Route(route) => {
                self.push(&route_header(route, None));
                self.route_body(route);
            }
            _ => self.push(&stage_flat(stage)),
        }
    }

    /// The arms of a route whose header (ending in `{`) is on the current line, one per line, and
    /// the closing `}`.
    fn route_body(&mut self, route: &Route) {
        if route.arms.is_empty() && !self.has_comment_in_span(route.arms_span) {
            self.push("}");
            return;
        }
        self.open();
        for arm in &route.arms {
            self.line(arm.span.start as usize, true);
            self.arm(arm);
            self.push(",");
            self.end_line(self.end_of(arm.span));
        }
        self.close(self.end_of(route.arms_span));
    }

    /// `pattern => stage | stage`; a long target continues on lines of its own as `| stage`.
    fn arm(&mut self, arm: &Arm) {
        let pattern = match &arm.pattern {
            ArmPattern::Values(values) => values.iter().map(|v| expr(v, '\'')).collect::<Vec<_>>().join(" | "),
            ArmPattern::When(e) => format!("when {}", expr(e, '\'')),
            ArmPattern::Else(_) => "else".to_string(),
        };
        self.push(&pattern);
        self.push(" =>");
        let Some((first, rest)) = arm.target.split_first() else { return };
        let flat = arm.target.iter().map(stage_flat).collect::<Vec<_>>().join(" | ");
        let comments =
            rest.last().is_some_and(|last| self.has_comment_in(arm.span.start as usize, last.span.start as usize));
        self.push(" ");
        if !comments && !route_before_end(&arm.target) && self.fits(&format!("{flat},")) {
            self.stage(first);
            for stage in rest {
                self.push(" | ");
                self.stage(stage);
            }
            return;
        }
        self.stage(first);
        let mut prev_end = self.end_of(first.span);
        self.indent += 1;
        for stage in rest {
            self.end_line(prev_end);
            self.line(stage.span.start as usize, false);
            self.push("| ");
            self.stage(stage);
            prev_end = self.end_of(stage.span);
        }
        self.indent -= 1;
    }

    /// `test "name" {` one `input`/`expect` per line, in written order `}`.
    fn test(&mut self, test: &TestDecl) {
        self.push("test ");
        self.push(&string_lit(&test.name, '"'));
        self.push(" {");
        let mut inputs = test.inputs.iter();
        let mut expects = test.expects.iter();
        let mut statements: Vec<(&str, &TestData)> = Vec::new();
        for kind in &test.order {
            match kind {
                TestStmtKind::Input => statements.extend(inputs.next().map(|d| ("input", d))),
                TestStmtKind::Expect => statements.extend(expects.next().map(|d| ("expect", d))),
            }
        }
        // `order` always matches the lists when it comes from the parser; keep anything extra.
        statements.extend(inputs.map(|d| ("input", d)));
        statements.extend(expects.map(|d| ("expect", d)));

        if statements.is_empty() && !self.has_comment_in_span(test.span) {
            self.push("}");
        } else {
            self.open();
            for (keyword, data) in statements {
                self.line(data.span.start as usize, true);
                self.push(&format!("{keyword} {} = {}", ident(&data.target.name), json(&data.value)));
                self.end_line(self.end_of(data.span));
            }
            self.close(self.end_of(test.span));
        }
        self.end_line(self.end_of(test.span));
    }
}

/// Where the last line of a broken pipeline starts: comments before it can be placed inside the
/// pipeline; comments after it belong to what follows.
fn last_line_start(p: &Pipeline) -> usize {
    p.stages.last().map_or(p.input.span().start, |s| s.span.start) as usize
}

/// A route followed by more stages (the checker rejects it, but it parses) forces a broken layout,
/// so a route's arms are always followed by a line break.
fn route_before_end(stages: &[Stage]) -> bool {
    stages.iter().rev().skip(1).any(|s| matches!(s.kind, StageKind::Route(_)))
}

/// The first line of a flat pipeline: everything up to a final route's `{`.
fn pipeline_first_line(p: &Pipeline) -> String {
    let mut line = input(&p.input);
    for stage in &p.stages {
        line.push_str(" | ");
        line.push_str(&stage_flat(stage));
    }
    line
}

// ---------------------------------------------------------------------------------------------
// Flat text of constructs that never break
// ---------------------------------------------------------------------------------------------

/// One stage on one line; a route gives only its header, up to and including `{`.
fn stage_flat(stage: &Stage) -> String {
    match &stage.kind {
        StageKind::Where(e) => format!("where {}", expr(e, '\'')),
        StageKind::Select(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|item| match item {
                    SelectItem::Star(_) => "*".to_string(),
                    SelectItem::Expr { expr: e, alias: None, .. } => expr(e, '\''),
                    SelectItem::Expr { expr: e, alias: Some(a), .. } => {
                        format!("{} as {}", expr(e, '\''), field_name(&a.name))
                    }
                })
                .collect();
            format!("select {}", items.join(", "))
        }
        StageKind::Route(route) => route_header(route, None),
        StageKind::Drop => "drop".to_string(),
        StageKind::Sink(name) => ident(&name.name),
    }
}

/// `route [all] [input] [by key] {`
fn route_header(route: &Route, from: Option<&Input>) -> String {
    let mut s = String::from("route");
    if route.all.is_some() {
        s.push_str(" all");
    }
    if let Some(from) = from {
        s.push(' ');
        s.push_str(&input(from));
    }
    if let Some(key) = &route.key {
        s.push_str(" by ");
        s.push_str(&expr(key, '\''));
    }
    s.push_str(" {");
    s
}

/// `orders`, or `merge(api, batch)` (always on one line).
fn input(i: &Input) -> String {
    match i {
        Input::Stream(s) => stream_ref(s),
        Input::Merge { streams, .. } => {
            let names: Vec<String> = streams.iter().map(stream_ref).collect();
            format!("merge({})", names.join(", "))
        }
    }
}

fn stream_ref(s: &StreamRef) -> String {
    let name = ident(&s.name.name);
    if s.errors.is_some() { format!("{name}.errors") } else { name }
}

fn option_flat(entry: &OptionEntry) -> String {
    format!("{} = {}", field_name(&entry.name.name), expr(&entry.value, '"'))
}

fn options_flat(options: &Options) -> String {
    if options.entries.is_empty() {
        return "{}".to_string();
    }
    let entries: Vec<String> = options.entries.iter().map(option_flat).collect();
    format!("{{ {} }}", entries.join(", "))
}

fn record_flat(record: &RecordType) -> String {
    if record.fields.is_empty() {
        return "{}".to_string();
    }
    let fields: Vec<String> =
        record.fields.iter().map(|f| format!("{}: {}", field_name(&f.name.name), type_flat(&f.ty))).collect();
    format!("{{ {} }}", fields.join(", "))
}

fn type_flat(ty: &TypeExpr) -> String {
    let base = match &ty.kind {
        TypeExprKind::Named(n) => ident(&n.name),
        TypeExprKind::List(inner) => format!("list<{}>", type_flat(inner)),
        TypeExprKind::Record(r) => record_flat(r),
    };
    if ty.optional { format!("{base}?") } else { base }
}

fn schema_ref_flat(s: &SchemaRef) -> String {
    match s {
        SchemaRef::Named(n) => ident(&n.name),
        SchemaRef::Inline(r) => record_flat(r),
    }
}

/// Test data, compactly: `{"id": "1", "tags": ["a", "b"]}`.
fn json(value: &Json) -> String {
    let mut out = String::new();
    write_json(&mut out, value);
    out
}

fn write_json(out: &mut String, value: &Json) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(n),
        Json::String(s) => out.push_str(&string_lit(s, '"')),
        Json::Array(items, _) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Json::Object(pairs, _) => {
            out.push('{');
            for (i, (key, item)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&string_lit(key, '"'));
                out.push_str(": ");
                write_json(out, item);
            }
            out.push('}');
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Names and literals
// ---------------------------------------------------------------------------------------------

/// Words that can never be a plain identifier. The first group is case-insensitive.
const KEYWORDS_ANY_CASE: &[&str] = &[
    "and", "or", "not", "in", "is", "null", "between", "like", "ilike", "case", "when", "then", "else", "end", "true",
    "false", "as",
];
const KEYWORDS: &[&str] = &[
    "import", "schema", "source", "sink", "flow", "route", "where", "select", "drop", "by", "all", "test", "input",
    "expect", "deploy", "list", "errors",
];
/// Keywords still allowed where the grammar expects a field name (`field_name`).
const SOFT_KEYWORDS: &[&str] = &[
    "import", "schema", "source", "sink", "flow", "test", "input", "expect", "deploy", "errors", "list", "route",
    "where", "select", "drop", "by", "all", "then", "end",
];

fn is_keyword(name: &str) -> bool {
    KEYWORDS.contains(&name) || KEYWORDS_ANY_CASE.iter().any(|k| k.eq_ignore_ascii_case(name))
}

fn is_plain(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !is_keyword(name)
}

/// A name where the grammar expects `ident`: back-quoted unless plain.
pub fn ident(name: &str) -> String {
    if is_plain(name) { name.to_string() } else { format!("`{name}`") }
}

/// A name where the grammar expects `field_name`, which also accepts soft keywords (`source`).
pub fn field_name(name: &str) -> String {
    if SOFT_KEYWORDS.contains(&name) { name.to_string() } else { ident(name) }
}

/// A string literal in `quote` (`'` or `"`), with the escapes the parser reads back.
fn string_lit(s: &str, quote: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            '\'' if quote == '\'' => out.push_str("''"),
            '"' if quote == '"' => out.push_str("\\\""),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

// ---------------------------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------------------------

/// Binding strength of an expression's outermost operator, on [`BinaryOp::precedence`]'s scale:
/// `not` sits between `and` and the comparisons, unary minus above `*`, atoms above all.
fn precedence(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary { op, .. } => op.precedence(),
        ExprKind::Unary { op: UnaryOp::Not, .. } => 3,
        ExprKind::IsNull { .. } | ExprKind::InList { .. } | ExprKind::Between { .. } | ExprKind::Like { .. } => 4,
        ExprKind::Unary { op: UnaryOp::Neg, .. } => 8,
        // `-5` is folded into the literal by the parser but still reads as a negation.
        ExprKind::Literal(Literal::Int(_, text) | Literal::Float(_, text)) if text.starts_with('-') => 8,
        _ => 9,
    }
}

/// An expression with minimal parentheses (plus those written, kept as `Paren`); string literals
/// in `quote`.
fn expr(e: &Expr, quote: char) -> String {
    let mut out = String::new();
    write_expr(&mut out, e, quote);
    out
}

/// Writes `e`, parenthesized if it binds looser than `min`.
fn write_operand(out: &mut String, e: &Expr, min: u8, quote: char) {
    if precedence(e) < min {
        out.push('(');
        write_expr(out, e, quote);
        out.push(')');
    } else {
        write_expr(out, e, quote);
    }
}

fn write_list(out: &mut String, items: &[Expr], quote: char) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_expr(out, item, quote);
    }
}

/// Predicates (`is null`, `in`, `between`, `like`) take `||`-level operands.
const PREDICATE_OPERAND: u8 = 5;

fn write_expr(out: &mut String, e: &Expr, quote: char) {
    match &e.kind {
        ExprKind::Literal(lit) => match lit {
            Literal::Null => out.push_str("null"),
            Literal::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            // As written: `1_000`, `2.5e3`, `250ms`, `10MiB`.
            Literal::Int(_, text) | Literal::Float(_, text) | Literal::Duration(_, text) | Literal::Size(_, text) => {
                out.push_str(text)
            }
            Literal::String(s) => out.push_str(&string_lit(s, quote)),
        },
        ExprKind::Field(path) => {
            for (i, name) in path.iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(&field_name(&name.name));
            }
        }
        ExprKind::Access(inner, name) => {
            write_operand(out, inner, 9, quote);
            out.push('.');
            out.push_str(&field_name(&name.name));
        }
        ExprKind::Meta(name) => {
            out.push('@');
            out.push_str(&ident(&name.name));
        }
        ExprKind::Call { name, args } => {
            out.push_str(&ident(&name.name));
            out.push('(');
            write_list(out, args, quote);
            out.push(')');
        }
        ExprKind::Unary { op: UnaryOp::Not, expr } => {
            out.push_str("not ");
            write_operand(out, expr, 3, quote);
        }
        ExprKind::Unary { op: UnaryOp::Neg, expr } => {
            out.push('-');
            write_operand(out, expr, 8, quote);
        }
        ExprKind::Binary { op, left, right } => {
            let p = op.precedence();
            // Comparisons do not chain; the others associate to the left.
            let left_min = if op.is_comparison() { p + 1 } else { p };
            write_operand(out, left, left_min, quote);
            out.push(' ');
            out.push_str(op.symbol());
            out.push(' ');
            write_operand(out, right, p + 1, quote);
        }
        ExprKind::IsNull { expr, negated } => {
            write_operand(out, expr, PREDICATE_OPERAND, quote);
            out.push_str(if *negated { " is not null" } else { " is null" });
        }
        ExprKind::InList { expr, list, negated } => {
            write_operand(out, expr, PREDICATE_OPERAND, quote);
            out.push_str(if *negated { " not in (" } else { " in (" });
            write_list(out, list, quote);
            out.push(')');
        }
        ExprKind::Between { expr, low, high, negated } => {
            write_operand(out, expr, PREDICATE_OPERAND, quote);
            out.push_str(if *negated { " not between " } else { " between " });
            write_operand(out, low, PREDICATE_OPERAND, quote);
            out.push_str(" and ");
            write_operand(out, high, PREDICATE_OPERAND, quote);
        }
        ExprKind::Like { expr, pattern, negated, case_insensitive } => {
            write_operand(out, expr, PREDICATE_OPERAND, quote);
            out.push_str(match (negated, case_insensitive) {
                (false, false) => " like ",
                (false, true) => " ilike ",
                (true, false) => " not like ",
                (true, true) => " not ilike ",
            });
            write_operand(out, pattern, PREDICATE_OPERAND, quote);
        }
        ExprKind::Case { operand, whens, otherwise } => {
            out.push_str("case");
            if let Some(operand) = operand {
                out.push(' ');
                write_expr(out, operand, quote);
            }
            for (when, then) in whens {
                out.push_str(" when ");
                write_expr(out, when, quote);
                out.push_str(" then ");
                write_expr(out, then, quote);
            }
            if let Some(otherwise) = otherwise {
                out.push_str(" else ");
                write_expr(out, otherwise, quote);
            }
            out.push_str(" end");
        }
        ExprKind::List(items) => {
            out.push('[');
            write_list(out, items, quote);
            out.push(']');
        }
        ExprKind::Paren(inner) => {
            out.push('(');
            write_expr(out, inner, quote);
            out.push(')');
        }
        // Only built next to a parse error, so `format` never gets here.
        ExprKind::Error => out.push_str("null"),
    }
}

// ---------------------------------------------------------------------------------------------
// dump
// ---------------------------------------------------------------------------------------------

/// A compact, span-free, S-expression dump of a module, one item per line, with precedence made
/// explicit: `(pipeline orders (where (and (> amount 100) (in country ['DE' 'FR']))) (sink vip))`.
/// Two modules dump equally exactly when they are equal apart from spans.
pub fn dump(module: &Module) -> String {
    let mut d = String::new();
    for item in &module.items {
        dump_item(&mut d, item);
        d.push('\n');
    }
    d
}

fn dump_item(d: &mut String, item: &Item) {
    match item {
        Item::Import(i) => {
            d.push_str("(import ");
            d.push_str(&string_lit(&i.path, '"'));
            d.push(')');
        }
        Item::Schema(s) => {
            d.push_str("(schema ");
            d.push_str(&ident(&s.name.name));
            d.push(' ');
            dump_record(d, &s.record);
            d.push(')');
        }
        Item::Source(c) => dump_connector(d, "source", c),
        Item::Sink(c) => dump_connector(d, "sink", c),
        Item::Flow(f) => {
            d.push_str("(flow ");
            d.push_str(&ident(&f.name.name));
            d.push(' ');
            dump_pipeline(d, &f.pipeline);
            d.push(')');
        }
        Item::Pipeline(p) => dump_pipeline(d, p),
        Item::Test(t) => {
            d.push_str("(test ");
            d.push_str(&string_lit(&t.name, '"'));
            let mut inputs = t.inputs.iter();
            let mut expects = t.expects.iter();
            for kind in &t.order {
                let (keyword, data) = match kind {
                    TestStmtKind::Input => ("input", inputs.next()),
                    TestStmtKind::Expect => ("expect", expects.next()),
                };
                if let Some(data) = data {
                    dump_test_data(d, keyword, data);
                }
            }
            // Entries `order` does not account for (never from the parser) still show.
            for data in inputs {
                dump_test_data(d, "input", data);
            }
            for data in expects {
                dump_test_data(d, "expect", data);
            }
            d.push(')');
        }
        Item::Deploy(dep) => {
            d.push_str("(deploy");
            dump_options(d, &dep.options);
            d.push(')');
        }
    }
}

fn dump_test_data(d: &mut String, keyword: &str, data: &TestData) {
    d.push_str(&format!(" ({keyword} {} {})", ident(&data.target.name), json(&data.value)));
}

fn dump_connector(d: &mut String, keyword: &str, c: &ConnectorDecl) {
    d.push_str(&format!("({keyword} {} {}", ident(&c.name.name), ident(&c.connector.name)));
    dump_options(d, &c.options);
    match &c.schema {
        Some(SchemaRef::Named(n)) => d.push_str(&format!(" (as {})", ident(&n.name))),
        Some(SchemaRef::Inline(r)) => {
            d.push_str(" (as ");
            dump_record(d, r);
            d.push(')');
        }
        None => {}
    }
    d.push(')');
}

/// ` (options (a 1) (b 'x'))`; nothing when the block was omitted.
fn dump_options(d: &mut String, options: &Options) {
    if options.span.is_none() && options.entries.is_empty() {
        return;
    }
    d.push_str(" (options");
    for entry in &options.entries {
        d.push_str(&format!(" ({} ", ident(&entry.name.name)));
        dump_expr(d, &entry.value);
        d.push(')');
    }
    d.push(')');
}

fn dump_record(d: &mut String, record: &RecordType) {
    d.push_str("(record");
    for field in &record.fields {
        d.push_str(&format!(" ({} ", ident(&field.name.name)));
        dump_type(d, &field.ty);
        d.push(')');
    }
    d.push(')');
}

/// `string`, `(list int)`, `(record ...)`; `?` after an optional type.
fn dump_type(d: &mut String, ty: &TypeExpr) {
    match &ty.kind {
        TypeExprKind::Named(n) => d.push_str(&ident(&n.name)),
        TypeExprKind::List(inner) => {
            d.push_str("(list ");
            dump_type(d, inner);
            d.push(')');
        }
        TypeExprKind::Record(r) => dump_record(d, r),
    }
    if ty.optional {
        d.push('?');
    }
}

fn dump_pipeline(d: &mut String, p: &Pipeline) {
    d.push_str(if p.route_statement { "(route-statement " } else { "(pipeline " });
    match &p.input {
        Input::Stream(s) => d.push_str(&stream_ref(s)),
        Input::Merge { streams, .. } => {
            d.push_str("(merge");
            for s in streams {
                d.push(' ');
                d.push_str(&stream_ref(s));
            }
            d.push(')');
        }
    }
    for stage in &p.stages {
        d.push(' ');
        dump_stage(d, stage);
    }
    d.push(')');
}

fn dump_stages(d: &mut String, stages: &[Stage]) {
    for stage in stages {
        d.push(' ');
        dump_stage(d, stage);
    }
}

fn dump_stage(d: &mut String, stage: &Stage) {
    match &stage.kind {
        StageKind::Where(e) => {
            d.push_str("(where ");
            dump_expr(d, e);
            d.push(')');
        }
        StageKind::Select(items) => {
            d.push_str("(select");
            for item in items {
                d.push(' ');
                match item {
                    SelectItem::Star(_) => d.push('*'),
                    SelectItem::Expr { expr, alias: None, .. } => dump_expr(d, expr),
                    SelectItem::Expr { expr, alias: Some(alias), .. } => {
                        d.push_str("(as ");
                        dump_expr(d, expr);
                        d.push(' ');
                        d.push_str(&ident(&alias.name));
                        d.push(')');
                    }
                }
            }
            d.push(')');
        }
        StageKind::Route(route) => {
            d.push_str("(route");
            if route.all.is_some() {
                d.push_str(" all");
            }
            if let Some(key) = &route.key {
                d.push_str(" (by ");
                dump_expr(d, key);
                d.push(')');
            }
            for arm in &route.arms {
                d.push_str(" (=> ");
                match &arm.pattern {
                    ArmPattern::Values(values) => {
                        d.push_str("(values");
                        for v in values {
                            d.push(' ');
                            dump_expr(d, v);
                        }
                        d.push(')');
                    }
                    ArmPattern::When(e) => {
                        d.push_str("(when ");
                        dump_expr(d, e);
                        d.push(')');
                    }
                    ArmPattern::Else(_) => d.push_str("else"),
                }
                dump_stages(d, &arm.target);
                d.push(')');
            }
            d.push(')');
        }
        StageKind::Drop => d.push_str("(drop)"),
        StageKind::Sink(name) => d.push_str(&format!("(sink {})", ident(&name.name))),
    }
}

fn dump_exprs(d: &mut String, items: &[Expr]) {
    for item in items {
        d.push(' ');
        dump_expr(d, item);
    }
}

fn dump_expr(d: &mut String, e: &Expr) {
    match &e.kind {
        // Numbers, durations and sizes as written: the text decides the kind and the value.
        ExprKind::Literal(Literal::String(s)) => d.push_str(&string_lit(s, '\'')),
        ExprKind::Literal(_) => write_expr(d, e, '\''),
        ExprKind::Field(path) => {
            let names: Vec<String> = path.iter().map(|n| ident(&n.name)).collect();
            d.push_str(&names.join("."));
        }
        ExprKind::Access(inner, name) => {
            d.push_str("(. ");
            dump_expr(d, inner);
            d.push(' ');
            d.push_str(&ident(&name.name));
            d.push(')');
        }
        ExprKind::Meta(name) => {
            d.push('@');
            d.push_str(&ident(&name.name));
        }
        ExprKind::Call { name, args } => {
            d.push_str("(call ");
            d.push_str(&ident(&name.name));
            dump_exprs(d, args);
            d.push(')');
        }
        ExprKind::Unary { op, expr } => {
            d.push_str(match op {
                UnaryOp::Not => "(not ",
                UnaryOp::Neg => "(neg ",
            });
            dump_expr(d, expr);
            d.push(')');
        }
        ExprKind::Binary { op, left, right } => {
            d.push('(');
            d.push_str(op.symbol());
            d.push(' ');
            dump_expr(d, left);
            d.push(' ');
            dump_expr(d, right);
            d.push(')');
        }
        ExprKind::IsNull { expr, negated } => {
            d.push_str(if *negated { "(is-not-null " } else { "(is-null " });
            dump_expr(d, expr);
            d.push(')');
        }
        ExprKind::InList { expr, list, negated } => {
            d.push_str(if *negated { "(not-in " } else { "(in " });
            dump_expr(d, expr);
            d.push_str(" [");
            for (i, item) in list.iter().enumerate() {
                if i > 0 {
                    d.push(' ');
                }
                dump_expr(d, item);
            }
            d.push_str("])");
        }
        ExprKind::Between { expr, low, high, negated } => {
            d.push_str(if *negated { "(not-between " } else { "(between " });
            dump_expr(d, expr);
            d.push(' ');
            dump_expr(d, low);
            d.push(' ');
            dump_expr(d, high);
            d.push(')');
        }
        ExprKind::Like { expr, pattern, negated, case_insensitive } => {
            d.push('(');
            if *negated {
                d.push_str("not-");
            }
            d.push_str(if *case_insensitive { "ilike " } else { "like " });
            dump_expr(d, expr);
            d.push(' ');
            dump_expr(d, pattern);
            d.push(')');
        }
        ExprKind::Case { operand, whens, otherwise } => {
            d.push_str("(case");
            if let Some(operand) = operand {
                d.push_str(" (operand ");
                dump_expr(d, operand);
                d.push(')');
            }
            for (when, then) in whens {
                d.push_str(" (when ");
                dump_expr(d, when);
                d.push(' ');
                dump_expr(d, then);
                d.push(')');
            }
            if let Some(otherwise) = otherwise {
                d.push_str(" (else ");
                dump_expr(d, otherwise);
                d.push(')');
            }
            d.push(')');
        }
        ExprKind::List(items) => {
            d.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    d.push(' ');
                }
                dump_expr(d, item);
            }
            d.push(']');
        }
        ExprKind::Paren(inner) => {
            d.push_str("(paren ");
            dump_expr(d, inner);
            d.push(')');
        }
        ExprKind::Error => d.push_str("(error)"),
    }
}
