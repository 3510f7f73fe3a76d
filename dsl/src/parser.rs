//! Text → [`ast::Module`]. The only module that sees pest types.

use crate::ast::*;
use crate::diagnostic::{Code, Diagnostic};
use crate::span::{FileId, Span};
use pest::Parser as _;
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/phoenix.pest"]
struct Grammar;

/// Deepest bracket or expression nesting accepted; deeper input gets E0004 instead of a stack
/// overflow somewhere downstream.
pub const MAX_DEPTH: usize = 256;

/// Parse one file. On a syntax error, returns the diagnostic (one: pest stops at the first).
pub fn parse(file: FileId, text: &str) -> Result<Module, Vec<Diagnostic>> {
    let lexed = Lexed::scan(file, text);
    if let Some(d) = lexed.too_deep {
        return Err(vec![d]);
    }
    let mut pairs = pest_parse(text).map_err(|e| vec![syntax_error(file, text, &lexed, e)])?;
    let mut b = Builder { file, errors: Vec::new(), comments: lexed.comments };
    let mut module = Module::default();
    if let Some(file_pair) = pairs.next() {
        for item in file_pair.into_inner() {
            if item.as_rule() == Rule::EOI {
                continue;
            }
            if let Some(item) = b.item(item) {
                module.items.push(item);
            }
        }
    }
    if b.errors.is_empty() { Ok(module) } else { Err(b.errors) }
}

/// Serializes the parses that turn pest's error detail on: it is a process-wide switch.
static ERROR_DETAIL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// pest's parse of a whole file. Error detail (the punctuation it expected, `,` or `}`, not only
/// rule names) records every failed attempt as it goes: 2.6 times the instructions (an allocation
/// on each attempt): only a text that fails is parsed again with it on, for the diagnostic. A
/// parse that overlaps a detailed one on another thread is only slower, never different.
fn pest_parse(text: &str) -> Result<pest::iterators::Pairs<'_, Rule>, pest::error::Error<Rule>> {
    Grammar::parse(Rule::file, text).or_else(|_| {
        let _one = ERROR_DETAIL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pest::set_error_detail(true);
        let detailed = Grammar::parse(Rule::file, text);
        pest::set_error_detail(false);
        detailed
    })
}

/// What one pass over the raw text finds before pest runs: comments (kept out of spans),
/// the first unterminated string or comment (pest reports those far from their start), and
/// nesting deeper than [`MAX_DEPTH`] (rejected before pest recurses into it).
struct Lexed {
    /// Byte ranges of `//` and `/* */` comments, sorted.
    comments: Vec<(usize, usize)>,
    unterminated: Option<Diagnostic>,
    too_deep: Option<Diagnostic>,
}

impl Lexed {
    fn scan(file: FileId, text: &str) -> Lexed {
        let bytes = text.as_bytes();
        let mut lexed = Lexed { comments: Vec::new(), unterminated: None, too_deep: None };
        // `opener` is the byte length of what opened it (`/*` or a quote), for the caret.
        let unterminated = |start: usize, opener: usize, what: &str, noun: &str, close: &str| {
            Some(
                Diagnostic::new(Code::Syntax, Span::new(file, start, start + opener), format!("unterminated {what}"))
                    .label(format!("{noun} starts here"))
                    .help(format!("close it with {close}")),
            )
        };
        let (mut depth, mut angles) = (0usize, 0usize);
        let mut i = 0;
        while i < bytes.len() && lexed.unterminated.is_none() && lexed.too_deep.is_none() {
            let start = i;
            match bytes[i] {
                b'/' if bytes.get(i + 1) == Some(&b'/') => {
                    i = text[i..].find('\n').map_or(bytes.len(), |e| i + e);
                    lexed.comments.push((start, i));
                    continue;
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => match text[i + 2..].find("*/") {
                    Some(e) => {
                        i += e + 4;
                        lexed.comments.push((start, i));
                        continue;
                    }
                    None => lexed.unterminated = unterminated(start, 2, "block comment", "comment", "`*/`"),
                },
                q @ (b'"' | b'\'' | b'`') => {
                    i += 1;
                    loop {
                        match bytes.get(i) {
                            // A quoted name ends on its line; strings may span lines.
                            None | Some(b'\n') if q == b'`' => {
                                lexed.unterminated = unterminated(start, 1, "quoted name", "name", "a backquote");
                                break;
                            }
                            None => {
                                lexed.unterminated =
                                    unterminated(start, 1, "string literal", "string", &format!("`{}`", q as char));
                                break;
                            }
                            Some(b'\\') if q != b'`' => i += 2,
                            // `''` inside single quotes is an escaped quote.
                            Some(b'\'') if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
                            Some(&c) if c == q => break,
                            Some(_) => i += 1,
                        }
                    }
                }
                // `<` nests only in `list<...>`; elsewhere `<` and `>` compare.
                b'<' if is_list_keyword_before(&text[..i]) => {
                    angles += 1;
                    depth += 1;
                }
                b'>' if angles > 0 => {
                    angles -= 1;
                    depth = depth.saturating_sub(1);
                }
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_DEPTH {
                lexed.too_deep = Some(
                    Diagnostic::new(Code::TooDeep, Span::new(file, i, i + 1), "brackets are nested too deeply")
                        .label(format!("more than {MAX_DEPTH} levels deep"))
                        .help("split the expression into smaller steps"),
                );
            }
            i += 1;
        }
        lexed
    }

    /// `pos` moved past whitespace and comments, so a caret lands on a token.
    fn skip_trivia(&self, text: &str, mut pos: usize) -> usize {
        loop {
            let rest = text.get(pos..).unwrap_or("");
            pos += rest.len() - rest.trim_start().len();
            match self.comments.binary_search_by_key(&pos, |c| c.0) {
                Ok(k) => pos = self.comments[k].1,
                Err(_) => return pos,
            }
        }
    }
}

/// Does `before` end with the word `list` (so a following `<` opens a list type)?
fn is_list_keyword_before(before: &str) -> bool {
    let before = before.trim_end();
    before.strip_suffix("list").is_some_and(|rest| !rest.ends_with(|c: char| c.is_alphanumeric() || c == '_'))
}

fn syntax_error(file: FileId, text: &str, lexed: &Lexed, e: pest::error::Error<Rule>) -> Diagnostic {
    if let Some(d) = &lexed.unterminated {
        return d.clone();
    }
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let pos = lexed.skip_trivia(text, pos);
    let found = found_at(text, pos);
    let end = (pos + found.len().max(1)).min(text.len()).max(pos);
    let span = Span::new(file, pos, end.max(pos));
    let (message, help) = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut expected: Vec<String> = positives.iter().filter_map(|r| describe(*r)).map(String::from).collect();
            // Punctuation pest tried at this position (`,`, `}`); words come from rules above.
            if let Some(attempts) = e.parse_attempts() {
                for t in attempts.expected_tokens() {
                    let token = t.to_string();
                    let punctuation = !token.chars().any(|c| c.is_alphanumeric() || matches!(c, '\\' | '_' | '.'));
                    let trivia = matches!(token.as_str(), "/*" | "//" | "\u{FEFF}" | "`");
                    if punctuation && !trivia && !token.trim().is_empty() {
                        expected.push(format!("`{token}`"));
                    }
                }
            }
            // Tokens that merely start an expression are covered by "an expression".
            if expected.iter().any(|e| e == "an expression") {
                expected.retain(|e| !matches!(e.as_str(), "`\"`" | "`'`" | "`(`" | "`-`" | "`@`" | "`[`"));
            }
            expected.sort();
            expected.dedup();
            let found_text = if found.is_empty() { "end of file".to_string() } else { format!("`{found}`") };
            let message = match expected.as_slice() {
                [] => format!("unexpected {found_text}"),
                [one] if one == "end of file" => format!("expected end of file, found {found_text}"),
                [one] => format!("expected {one}, found {found_text}"),
                many => {
                    let (last, rest) = many.split_last().expect("many is non-empty");
                    format!("expected {} or {last}, found {found_text}", rest.join(", "))
                }
            };
            let missing_comma = expected.iter().any(|e| e == "`,`")
                && found.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '\'' || c == '"');
            let help = if missing_comma {
                Some(format!("is a `,` missing before `{found}`?"))
            } else {
                hint(positives, &found)
            };
            (message, help)
        }
        ErrorVariant::CustomError { message } => (message.clone(), None),
    };
    Diagnostic::new(Code::Syntax, span, message).label("unexpected here").maybe_help(help)
}

/// The token at `pos`, for "found `x`" (a word, or one character).
fn found_at(text: &str, pos: usize) -> String {
    let rest = text.get(pos..).unwrap_or("");
    let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    if !word.is_empty() {
        return word;
    }
    rest.chars().next().map(String::from).unwrap_or_default()
}

/// A user-facing name for a rule pest expected, or `None` for rules too small to mention.
fn describe(rule: Rule) -> Option<&'static str> {
    use Rule::*;
    Some(match rule {
        EOI => "end of file",
        item | import_decl | schema_decl | source_decl | sink_decl | flow_decl | route_stmt | test_decl
        | deploy_decl | pipeline_stmt => {
            "a declaration (`schema`, `source`, `sink`, `flow`, `route`, `test`, `deploy`) or a pipeline"
        }
        ident | plain_ident | quoted_ident | field_name | soft_keyword | stream_ref | sink_ref => "a name",
        merge | kw_merge => "`merge(stream, stream, ...)`",
        expr | or_expr | and_expr | not_expr | predicate | concat | additive | term | unary | postfix | literal
        | number | string | bool_lit | null_lit | duration | size | call | field_ref | meta_ref | list_expr
        | paren_expr | case_expr | not_op | neg_op => "an expression",
        kw_and | kw_or | cmp_op | add_op | mul_op | is_null | in_list | between | like | comparison | negated
        | kw_is | kw_in | kw_between | kw_like | kw_ilike => "an operator",
        type_expr | list_type | record_type => "a type",
        field_decl => "a field (`name: type`)",
        option => "an option (`name = value`)",
        options => "`{`",
        schema_clause | kw_as => "`as`",
        stage | where_stage | select_stage | route_stage | drop_stage | kw_where | kw_select | kw_route | kw_drop => {
            "a stage (`where`, `select`, `route`, `drop`) or a sink"
        }
        select_item | star => "a select item",
        route_arms => "`{`",
        route_arm | arm_values | arm_value | neg_number => {
            "a route arm (`'value' => target`, `when <predicate> => target`, `else => target`)"
        }
        arm_target => "a route target (a sink, `drop`, or a pipeline)",
        route_key | kw_by => "`by`",
        route_all | kw_all => "`all`",
        test_input | kw_input => "`input`",
        test_expect | kw_expect => "`expect`",
        json_value | json_object | json_array | json_number | json_pair => "a JSON value",
        case_when | kw_when => "`when`",
        case_else | kw_else => "`else`",
        kw_then => "`then`",
        kw_end => "`end`",
        kw_null => "`null`",
        errors_port | kw_errors => "`errors`",
        optional_mark => "`?`",
        _ => return None,
    })
}

/// A targeted hint for common slips.
fn hint(positives: &[Rule], found: &str) -> Option<String> {
    if positives.contains(&Rule::EOI) && found == "|" {
        return Some("a pipeline ends at its sink; start a new statement for another pipeline".into());
    }
    if found == "\"" && positives.iter().any(|r| matches!(r, Rule::expr | Rule::concat)) {
        return None;
    }
    if found == "&" {
        return Some("write `and` (and `or` for `||` between conditions)".into());
    }
    if found == "!" {
        return Some("write `not`, or `!=` for inequality".into());
    }
    if matches!(found, "and" | "or" | "not") {
        return None;
    }
    if positives.contains(&Rule::field_decl) {
        return Some("fields are written `name: type`, separated by commas".into());
    }
    if positives.contains(&Rule::option) {
        return Some("options are written `name = value`, separated by commas".into());
    }
    None
}

struct Builder {
    file: FileId,
    errors: Vec<Diagnostic>,
    /// Byte ranges of comments, sorted, to keep them out of spans.
    comments: Vec<(usize, usize)>,
}

type P<'a> = Pair<'a, Rule>;

impl Builder {
    fn span(&self, p: &P) -> Span {
        // pest spans include whitespace skipped before a failed optional tail; trim it so
        // carets end at the last token.
        let s = p.as_span();
        let mut end = s.end();
        loop {
            let text = &s.get_input()[s.start()..end];
            end = s.start() + text.trim_end_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}').len();
            // A comment that ends where the span (now) ends is trivia after the last token.
            match self.comments.binary_search_by_key(&end, |c| c.1) {
                Ok(k) if self.comments[k].0 >= s.start() => end = self.comments[k].0,
                _ => break,
            }
        }
        Span::new(self.file, s.start(), end)
    }

    fn ident(&mut self, p: P) -> Ident {
        let span = self.span(&p);
        let text = p.as_str();
        let name = if let Some(inner) = text.strip_prefix('`') {
            inner.trim_end_matches('`').to_string()
        } else {
            text.to_string()
        };
        Ident { name, span }
    }

    fn item(&mut self, p: P) -> Option<Item> {
        let span = self.span(&p);
        Some(match p.as_rule() {
            Rule::import_decl => {
                let s = p.into_inner().find(|p| p.as_rule() == Rule::string)?;
                let path_span = self.span(&s);
                Item::Import(Import { path: self.string(s), path_span, span })
            }
            Rule::schema_decl => {
                let mut it = p.into_inner().filter(|p| p.as_rule() != Rule::kw_schema);
                let name = self.ident(it.next()?);
                let record = self.record(it.next()?);
                Item::Schema(SchemaDecl { name, record, span })
            }
            Rule::source_decl => Item::Source(self.connector_decl(p)),
            Rule::sink_decl => Item::Sink(self.connector_decl(p)),
            Rule::flow_decl => {
                let mut it = p.into_inner().filter(|p| p.as_rule() != Rule::kw_flow);
                let name = self.ident(it.next()?);
                let pipeline = self.pipeline(it.next()?, false);
                Item::Flow(FlowDecl { name, pipeline, span })
            }
            Rule::pipeline_stmt => Item::Pipeline(self.pipeline(p.into_inner().next()?, false)),
            Rule::route_stmt => {
                let mut input = None;
                let mut all = None;
                let mut key = None;
                let mut arms = (Vec::new(), span);
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::route_all => all = Some(self.span(&c)),
                        Rule::stream_ref | Rule::merge => input = Some(self.input(c)),
                        Rule::route_key => key = Some(self.route_key(c)),
                        Rule::route_arms => arms = self.route_arms(c),
                        _ => {}
                    }
                }
                let route = Route { all, key, arms: arms.0, arms_span: arms.1 };
                let stage_span = span;
                Item::Pipeline(Pipeline {
                    input: input?,
                    stages: vec![Stage { kind: StageKind::Route(route), span: stage_span }],
                    route_statement: true,
                    span,
                })
            }
            Rule::test_decl => self.test(p),
            Rule::deploy_decl => {
                let options =
                    p.into_inner().find(|c| c.as_rule() == Rule::options).map(|o| self.options(o)).unwrap_or_default();
                Item::Deploy(DeployDecl { options, span })
            }
            _ => return None,
        })
    }

    fn connector_decl(&mut self, p: P) -> ConnectorDecl {
        let span = self.span(&p);
        let mut names = Vec::new();
        let mut options = Options::default();
        let mut schema = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::ident => names.push(self.ident(c)),
                Rule::options => options = self.options(c),
                Rule::schema_clause => schema = self.schema_clause(c),
                _ => {}
            }
        }
        let connector = names.pop().unwrap_or(Ident { name: String::new(), span });
        let name = names.pop().unwrap_or(Ident { name: String::new(), span });
        ConnectorDecl { name, connector, options, schema, span }
    }

    fn schema_clause(&mut self, p: P) -> Option<SchemaRef> {
        let c = p.into_inner().find(|c| c.as_rule() != Rule::kw_as)?;
        Some(match c.as_rule() {
            Rule::record_type => SchemaRef::Inline(self.record(c)),
            _ => SchemaRef::Named(self.ident(c)),
        })
    }

    fn options(&mut self, p: P) -> Options {
        let span = self.span(&p);
        let mut entries = Vec::new();
        for o in p.into_inner() {
            let ospan = self.span(&o);
            let mut it = o.into_inner();
            let (Some(n), Some(v)) = (it.next(), it.next()) else { continue };
            let name = self.ident(n);
            let value = self.expr(v);
            entries.push(OptionEntry { name, value, span: ospan });
        }
        Options { entries, span: Some(span) }
    }

    fn record(&mut self, p: P) -> RecordType {
        let span = self.span(&p);
        let mut fields = Vec::new();
        for f in p.into_inner() {
            let fspan = self.span(&f);
            let mut it = f.into_inner();
            let (Some(n), Some(t)) = (it.next(), it.next()) else { continue };
            let name = self.ident(n);
            let ty = self.type_expr(t);
            fields.push(FieldDecl { name, ty, span: fspan });
        }
        RecordType { fields, span }
    }

    fn type_expr(&mut self, p: P) -> TypeExpr {
        let span = self.span(&p);
        let mut optional = false;
        let mut kind = TypeExprKind::Named(Ident { name: String::new(), span });
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::optional_mark => optional = true,
                Rule::list_type => {
                    if let Some(inner) = c.into_inner().find(|c| c.as_rule() == Rule::type_expr) {
                        kind = TypeExprKind::List(Box::new(self.type_expr(inner)));
                    }
                }
                Rule::record_type => kind = TypeExprKind::Record(self.record(c)),
                _ => kind = TypeExprKind::Named(self.ident(c)),
            }
        }
        TypeExpr { kind, optional, span }
    }

    fn pipeline(&mut self, p: P, route_statement: bool) -> Pipeline {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let input = match it.next() {
            Some(s) => self.input(s),
            None => Input::Stream(StreamRef { name: Ident { name: String::new(), span }, errors: None, span }),
        };
        let stages = it.map(|s| self.stage(s)).collect();
        Pipeline { input, stages, route_statement, span }
    }

    /// A `stream_ref` or a `merge` of them.
    fn input(&mut self, p: P) -> Input {
        if p.as_rule() != Rule::merge {
            return Input::Stream(self.stream_ref(p));
        }
        let span = self.span(&p);
        let streams: Vec<StreamRef> =
            p.into_inner().filter(|c| c.as_rule() == Rule::stream_ref).map(|c| self.stream_ref(c)).collect();
        if streams.len() < 2 {
            self.errors.push(
                Diagnostic::new(Code::Syntax, span, "`merge` needs at least two streams")
                    .label("one stream")
                    .help("merge two or more (`merge(a, b)`), or read the stream alone (`a | ...`)"),
            );
        }
        Input::Merge { streams, span }
    }

    fn stream_ref(&mut self, p: P) -> StreamRef {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let name = match it.next() {
            Some(n) => self.ident(n),
            None => Ident { name: String::new(), span },
        };
        let errors = it.next().map(|e| self.span(&e));
        StreamRef { name, errors, span }
    }

    fn stage(&mut self, p: P) -> Stage {
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::where_stage => {
                let e = p.into_inner().find(|c| c.as_rule() == Rule::expr);
                StageKind::Where(e.map_or(Expr { kind: ExprKind::Error, span }, |e| self.expr(e)))
            }
            Rule::select_stage => StageKind::Select(
                p.into_inner().filter(|c| c.as_rule() == Rule::select_item).map(|c| self.select_item(c)).collect(),
            ),
            Rule::route_stage => {
                let mut all = None;
                let mut key = None;
                let mut arms = (Vec::new(), span);
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::route_all => all = Some(self.span(&c)),
                        Rule::route_key => key = Some(self.route_key(c)),
                        Rule::route_arms => arms = self.route_arms(c),
                        _ => {}
                    }
                }
                StageKind::Route(Route { all, key, arms: arms.0, arms_span: arms.1 })
            }
            Rule::drop_stage => StageKind::Drop,
            _ => {
                let name = p.into_inner().next().map_or(Ident { name: String::new(), span }, |i| self.ident(i));
                StageKind::Sink(name)
            }
        };
        Stage { kind, span }
    }

    fn select_item(&mut self, p: P) -> SelectItem {
        let span = self.span(&p);
        let mut expr = None;
        let mut alias = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::star => return SelectItem::Star(span),
                Rule::expr => expr = Some(self.expr(c)),
                Rule::field_name => alias = Some(self.ident(c)),
                _ => {}
            }
        }
        SelectItem::Expr { expr: expr.unwrap_or(Expr { kind: ExprKind::Error, span }), alias, span }
    }

    fn route_key(&mut self, p: P) -> Expr {
        let span = self.span(&p);
        p.into_inner()
            .find(|c| c.as_rule() == Rule::expr)
            .map_or(Expr { kind: ExprKind::Error, span }, |e| self.expr(e))
    }

    fn route_arms(&mut self, p: P) -> (Vec<Arm>, Span) {
        let span = self.span(&p);
        let arms = p.into_inner().map(|a| self.arm(a)).collect();
        (arms, span)
    }

    fn arm(&mut self, p: P) -> Arm {
        let span = self.span(&p);
        let mut pattern = ArmPattern::Else(span);
        let mut target = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::kw_else => pattern = ArmPattern::Else(self.span(&c)),
                Rule::kw_when => {}
                Rule::expr => pattern = ArmPattern::When(self.expr(c)),
                Rule::arm_values => {
                    pattern = ArmPattern::Values(c.into_inner().map(|v| self.arm_value(v)).collect());
                }
                Rule::arm_target => target = c.into_inner().map(|s| self.stage(s)).collect(),
                _ => {}
            }
        }
        Arm { pattern, target, span }
    }

    fn arm_value(&mut self, p: P) -> Expr {
        let span = self.span(&p);
        let Some(inner) = p.into_inner().next() else { return Expr { kind: ExprKind::Error, span } };
        if inner.as_rule() == Rule::neg_number {
            let n = inner.into_inner().next();
            let lit = n.map(|n| self.number(n, true));
            return Expr { kind: lit.map_or(ExprKind::Error, ExprKind::Literal), span };
        }
        self.primary(inner)
    }

    fn test(&mut self, p: P) -> Item {
        let span = self.span(&p);
        let mut name = String::new();
        let mut name_span = span;
        let mut inputs = Vec::new();
        let mut expects = Vec::new();
        let mut order = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::string => {
                    name_span = self.span(&c);
                    name = self.string(c);
                }
                Rule::test_input | Rule::test_expect => {
                    let is_input = c.as_rule() == Rule::test_input;
                    let dspan = self.span(&c);
                    let mut it = c.into_inner().filter(|x| !matches!(x.as_rule(), Rule::kw_input | Rule::kw_expect));
                    let (Some(t), Some(v)) = (it.next(), it.next()) else { continue };
                    let data = TestData { target: self.ident(t), value: self.json(v), span: dspan };
                    if is_input {
                        order.push(TestStmtKind::Input);
                        inputs.push(data);
                    } else {
                        order.push(TestStmtKind::Expect);
                        expects.push(data);
                    }
                }
                _ => {}
            }
        }
        Item::Test(TestDecl { name, name_span, inputs, expects, order, span })
    }

    fn json(&mut self, p: P) -> Json {
        let span = self.span(&p);
        let p = if p.as_rule() == Rule::json_value { p.into_inner().next() } else { Some(p) };
        let Some(p) = p else { return Json::Null };
        match p.as_rule() {
            Rule::json_object => Json::Object(
                p.into_inner()
                    .filter_map(|pair| {
                        let mut it = pair.into_inner();
                        let k = it.next()?;
                        let v = it.next()?;
                        Some((self.string(k), self.json(v)))
                    })
                    .collect(),
                span,
            ),
            Rule::json_array => Json::Array(p.into_inner().map(|v| self.json(v)).collect(), span),
            Rule::string => Json::String(self.string(p)),
            Rule::json_number => Json::Number(p.as_str().to_string()),
            Rule::bool_lit => Json::Bool(p.as_str().eq_ignore_ascii_case("true")),
            _ => Json::Null,
        }
    }

    // ---- expressions --------------------------------------------------------------------------

    fn expr(&mut self, p: P) -> Expr {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::expr | Rule::paren_expr => match p.into_inner().next() {
                Some(inner) => self.expr(inner),
                None => Expr { kind: ExprKind::Error, span },
            },
            Rule::or_expr | Rule::and_expr => {
                let op = if p.as_rule() == Rule::or_expr { BinaryOp::Or } else { BinaryOp::And };
                let operands: Vec<P> =
                    p.into_inner().filter(|c| !matches!(c.as_rule(), Rule::kw_or | Rule::kw_and)).collect();
                self.fold(operands.into_iter().map(|o| (op, o)).collect())
            }
            Rule::concat => {
                let operands: Vec<P> = p.into_inner().collect();
                self.fold(operands.into_iter().map(|o| (BinaryOp::Concat, o)).collect())
            }
            Rule::additive | Rule::term => {
                // operand (op operand)*
                let mut parts = Vec::new();
                let mut op = BinaryOp::Add;
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::add_op | Rule::mul_op => {
                            op = match c.as_str() {
                                "+" => BinaryOp::Add,
                                "-" => BinaryOp::Sub,
                                "*" => BinaryOp::Mul,
                                "/" => BinaryOp::Div,
                                _ => BinaryOp::Mod,
                            }
                        }
                        _ => parts.push((op, c)),
                    }
                }
                self.fold(parts)
            }
            Rule::not_expr => {
                let mut nots = Vec::new();
                let mut inner = None;
                for c in p.into_inner() {
                    if c.as_rule() == Rule::not_op {
                        nots.push(self.span(&c));
                    } else {
                        inner = Some(self.expr(c));
                    }
                }
                let mut e = inner.unwrap_or(Expr { kind: ExprKind::Error, span });
                for s in nots.into_iter().rev() {
                    if e.kind == ExprKind::Error {
                        break;
                    }
                    e = self.guard(Expr {
                        span: s.to(e.span),
                        kind: ExprKind::Unary { op: UnaryOp::Not, expr: Box::new(e) },
                    });
                }
                e
            }
            Rule::unary => {
                let mut negs = Vec::new();
                let mut inner = None;
                for c in p.into_inner() {
                    if c.as_rule() == Rule::neg_op {
                        negs.push(self.span(&c));
                    } else {
                        inner = Some(self.expr(c));
                    }
                }
                let mut e = inner.unwrap_or(Expr { kind: ExprKind::Error, span });
                for s in negs.into_iter().rev() {
                    if e.kind == ExprKind::Error {
                        break;
                    }
                    // Fold `-literal` into the literal so `-5` is a constant, as users expect.
                    e = match e.kind {
                        ExprKind::Literal(Literal::Int(v, t)) if !t.starts_with('-') => {
                            Expr { kind: ExprKind::Literal(Literal::Int(-v, format!("-{t}"))), span: s.to(e.span) }
                        }
                        ExprKind::Literal(Literal::Float(v, t)) if !t.starts_with('-') => {
                            Expr { kind: ExprKind::Literal(Literal::Float(-v, format!("-{t}"))), span: s.to(e.span) }
                        }
                        kind => self.guard(Expr {
                            span: s.to(e.span),
                            kind: ExprKind::Unary { op: UnaryOp::Neg, expr: Box::new(Expr { kind, span: e.span }) },
                        }),
                    };
                }
                e
            }
            Rule::predicate => self.predicate(p),
            Rule::postfix => {
                let mut it = p.into_inner();
                let Some(first) = it.next() else { return Expr { kind: ExprKind::Error, span } };
                let mut e = self.primary(first);
                for f in it {
                    let name = self.ident(f);
                    let span = e.span.to(name.span);
                    e = match e.kind {
                        ExprKind::Field(mut path) => {
                            path.push(name);
                            Expr { kind: ExprKind::Field(path), span }
                        }
                        kind => self
                            .guard(Expr { kind: ExprKind::Access(Box::new(Expr { kind, span: e.span }), name), span }),
                    };
                }
                e
            }
            _ => self.primary(p),
        }
    }

    /// Left-fold `a op b op c` iteratively (no recursion on long chains), bounding depth.
    fn fold(&mut self, parts: Vec<(BinaryOp, P)>) -> Expr {
        let mut acc: Option<Expr> = None;
        for (op, p) in parts {
            let rhs = self.expr(p);
            acc = Some(match acc {
                None => rhs,
                // Already reported as too deep: extend the error instead of reporting again.
                Some(lhs) if lhs.kind == ExprKind::Error => Expr { span: lhs.span.to(rhs.span), kind: ExprKind::Error },
                Some(lhs) => self.guard(Expr {
                    span: lhs.span.to(rhs.span),
                    kind: ExprKind::Binary { op, left: Box::new(lhs), right: Box::new(rhs) },
                }),
            });
        }
        acc.unwrap_or(Expr { kind: ExprKind::Error, span: Span::new(self.file, 0, 0) })
    }

    /// Replaces an expression nested deeper than [`MAX_DEPTH`] by an error node, so the checker
    /// and lowering (which recurse) stay within the stack.
    fn guard(&mut self, e: Expr) -> Expr {
        if depth(&e) > MAX_DEPTH {
            self.errors.push(
                Diagnostic::new(Code::TooDeep, e.span, "expression is nested too deeply")
                    .label(format!("more than {MAX_DEPTH} levels of operators"))
                    .help("split the expression into smaller steps"),
            );
            return Expr { kind: ExprKind::Error, span: e.span };
        }
        e
    }

    fn predicate(&mut self, p: P) -> Expr {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let Some(first) = it.next() else { return Expr { kind: ExprKind::Error, span } };
        let lhs = self.expr(first);
        let Some(tail) = it.next() else { return lhs };
        let mut negated = false;
        let mut parts = Vec::new();
        let rule = tail.as_rule();
        let mut ci = false;
        let mut cmp = BinaryOp::Eq;
        for c in tail.into_inner() {
            match c.as_rule() {
                Rule::negated => negated = true,
                Rule::kw_ilike => ci = true,
                Rule::cmp_op => {
                    cmp = match c.as_str() {
                        "=" | "==" => BinaryOp::Eq,
                        "!=" | "<>" => BinaryOp::NotEq,
                        "<" => BinaryOp::Lt,
                        "<=" => BinaryOp::LtEq,
                        ">" => BinaryOp::Gt,
                        _ => BinaryOp::GtEq,
                    }
                }
                Rule::kw_is | Rule::kw_null | Rule::kw_in | Rule::kw_between | Rule::kw_and | Rule::kw_like => {}
                _ => parts.push(self.expr(c)),
            }
        }
        let b = |e: Expr| Box::new(e);
        let kind = match rule {
            Rule::is_null => ExprKind::IsNull { expr: b(lhs), negated },
            Rule::in_list => ExprKind::InList { expr: b(lhs), list: parts, negated },
            Rule::between if parts.len() == 2 => {
                let high = parts.pop().expect("two parts");
                let low = parts.pop().expect("two parts");
                ExprKind::Between { expr: b(lhs), low: b(low), high: b(high), negated }
            }
            Rule::like if parts.len() == 1 => {
                ExprKind::Like { expr: b(lhs), pattern: b(parts.remove(0)), negated, case_insensitive: ci }
            }
            Rule::comparison if parts.len() == 1 => {
                ExprKind::Binary { op: cmp, left: b(lhs), right: b(parts.remove(0)) }
            }
            _ => ExprKind::Error,
        };
        self.guard(Expr { kind, span })
    }

    fn primary(&mut self, p: P) -> Expr {
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::number => ExprKind::Literal(self.number(p, false)),
            Rule::string => ExprKind::Literal(Literal::String(self.string(p))),
            Rule::bool_lit => ExprKind::Literal(Literal::Bool(p.as_str().eq_ignore_ascii_case("true"))),
            Rule::null_lit => ExprKind::Literal(Literal::Null),
            Rule::duration => ExprKind::Literal(self.duration(p)),
            Rule::size => ExprKind::Literal(self.size(p)),
            Rule::field_ref => {
                let id = p.into_inner().next().map_or(Ident { name: String::new(), span }, |i| self.ident(i));
                ExprKind::Field(vec![id])
            }
            Rule::meta_ref => {
                let id = p.into_inner().next().map_or(Ident { name: String::new(), span }, |i| self.ident(i));
                ExprKind::Meta(id)
            }
            Rule::call => {
                let mut it = p.into_inner();
                let name = it.next().map_or(Ident { name: String::new(), span }, |i| self.ident(i));
                let args = it.map(|a| self.expr(a)).collect();
                ExprKind::Call { name, args }
            }
            Rule::list_expr => ExprKind::List(p.into_inner().map(|a| self.expr(a)).collect()),
            Rule::paren_expr => {
                let inner = p.into_inner().next().map_or(Expr { kind: ExprKind::Error, span }, |e| self.expr(e));
                ExprKind::Paren(Box::new(inner))
            }
            Rule::case_expr => {
                let mut operand = None;
                let mut whens = Vec::new();
                let mut otherwise = None;
                for c in p.into_inner() {
                    match c.as_rule() {
                        Rule::expr => operand = Some(Box::new(self.expr(c))),
                        Rule::case_when => {
                            let mut it = c.into_inner().filter(|x| x.as_rule() == Rule::expr);
                            if let (Some(w), Some(t)) = (it.next(), it.next()) {
                                let w = self.expr(w);
                                let t = self.expr(t);
                                whens.push((w, t));
                            }
                        }
                        Rule::case_else => {
                            if let Some(e) = c.into_inner().find(|x| x.as_rule() == Rule::expr) {
                                otherwise = Some(Box::new(self.expr(e)));
                            }
                        }
                        _ => {}
                    }
                }
                ExprKind::Case { operand, whens, otherwise }
            }
            _ => return self.expr(p),
        };
        Expr { kind, span }
    }

    fn invalid(&mut self, span: Span, message: impl Into<String>, help: Option<&str>) {
        let mut d = Diagnostic::new(Code::InvalidLiteral, span, message).label("here");
        if let Some(h) = help {
            d = d.help(h);
        }
        self.errors.push(d);
    }

    fn number(&mut self, p: P, negative: bool) -> Literal {
        let span = self.span(&p);
        let text = p.as_str();
        let clean: String = text.chars().filter(|c| *c != '_').collect();
        let clean = if negative { format!("-{clean}") } else { clean };
        let written = if negative { format!("-{text}") } else { text.to_string() };
        if clean.contains(['.', 'e', 'E']) {
            match clean.parse::<f64>() {
                Ok(v) if v.is_finite() => Literal::Float(v, written),
                _ => {
                    self.invalid(span, format!("number `{text}` is out of range"), None);
                    Literal::Float(0.0, written)
                }
            }
        } else {
            match clean.parse::<i64>() {
                Ok(v) => Literal::Int(v, written),
                Err(_) => {
                    self.invalid(
                        span,
                        format!("integer `{text}` does not fit in 64 bits"),
                        Some("integers range from -9223372036854775808 to 9223372036854775807; write a float (`1e20`) for larger values"),
                    );
                    Literal::Int(0, written)
                }
            }
        }
    }

    fn duration(&mut self, p: P) -> Literal {
        let span = self.span(&p);
        let text = p.as_str().to_string();
        let (digits, unit) = digits_and_unit(p);
        // The grammar admits only the units the table knows.
        let scale = crate::types::duration_unit_ns(unit).unwrap_or(1);
        match digits.checked_mul(scale).and_then(|n| i64::try_from(n).ok()) {
            Some(n) => Literal::Duration(n, text),
            None => {
                self.invalid(
                    span,
                    format!("duration `{text}` is too long"),
                    Some("durations go up to about 292 years"),
                );
                Literal::Duration(0, text)
            }
        }
    }

    fn size(&mut self, p: P) -> Literal {
        let span = self.span(&p);
        let text = p.as_str().to_string();
        let (digits, unit) = digits_and_unit(p);
        let scale = crate::types::size_unit_bytes(unit).unwrap_or(1);
        match digits.checked_mul(scale).filter(|n| i64::try_from(*n).is_ok()) {
            Some(n) => Literal::Size(n, text),
            None => {
                self.invalid(span, format!("size `{text}` is too large"), None);
                Literal::Size(0, text)
            }
        }
    }

    /// Decode a quoted string literal.
    fn string(&mut self, p: P) -> String {
        let span = self.span(&p);
        let raw = p.as_str();
        let quote = raw.chars().next().unwrap_or('"');
        let body = raw.get(1..raw.len().saturating_sub(1)).unwrap_or("");
        let mut out = String::with_capacity(body.len());
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            if c == quote && quote == '\'' && chars.peek() == Some(&'\'') {
                chars.next();
                out.push('\'');
                continue;
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('0') => out.push('\0'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('\'') => out.push('\''),
                Some('/') => out.push('/'),
                Some('u') => {
                    // `\u{1F600}` or JSON's `\u00e9`.
                    let code: String = if chars.peek() == Some(&'{') {
                        chars.next();
                        let s: String = chars.by_ref().take_while(|c| *c != '}').collect();
                        s
                    } else {
                        chars.by_ref().take(4).collect()
                    };
                    match u32::from_str_radix(&code, 16).ok().and_then(char::from_u32) {
                        Some(ch) => out.push(ch),
                        None => self.invalid(
                            span,
                            format!("invalid unicode escape `\\u{code}`"),
                            Some("write `\\u{1F600}` or `\\u00e9`"),
                        ),
                    }
                }
                Some(other) => self.invalid(
                    span,
                    format!("unknown escape `\\{other}` in string"),
                    Some("known escapes: \\n \\t \\r \\0 \\\\ \\\" \\' \\/ \\u{...}"),
                ),
                None => {}
            }
        }
        out
    }
}

/// The number and unit of a `250ms` or `10MiB` literal (`u64::MAX` when the number overflows,
/// which the caller reports as out of range).
fn digits_and_unit<'a>(p: P<'a>) -> (u64, &'a str) {
    let mut digits = 0u64;
    let mut unit = "";
    for c in p.into_inner() {
        match c.as_rule() {
            Rule::digits => digits = c.as_str().replace('_', "").parse().unwrap_or(u64::MAX),
            _ => unit = c.as_str(),
        }
    }
    (digits, unit)
}

/// Depth of an expression tree, computed without deep recursion on operands that were themselves
/// guarded (their depth is bounded by [`MAX_DEPTH`]).
fn depth(e: &Expr) -> usize {
    fn go(e: &Expr, budget: usize) -> usize {
        if budget == 0 {
            return 1;
        }
        let b = budget - 1;
        1 + match &e.kind {
            ExprKind::Unary { expr, .. }
            | ExprKind::IsNull { expr, .. }
            | ExprKind::Paren(expr)
            | ExprKind::Access(expr, _) => go(expr, b),
            ExprKind::Binary { left, right, .. } => go(left, b).max(go(right, b)),
            ExprKind::Like { expr, pattern, .. } => go(expr, b).max(go(pattern, b)),
            ExprKind::Between { expr, low, high, .. } => go(expr, b).max(go(low, b)).max(go(high, b)),
            ExprKind::InList { expr, list, .. } => list.iter().map(|x| go(x, b)).max().unwrap_or(0).max(go(expr, b)),
            ExprKind::Call { args, .. } | ExprKind::List(args) => args.iter().map(|x| go(x, b)).max().unwrap_or(0),
            ExprKind::Case { operand, whens, otherwise } => whens
                .iter()
                .map(|(w, t)| go(w, b).max(go(t, b)))
                .chain(operand.iter().map(|o| go(o, b)))
                .chain(otherwise.iter().map(|o| go(o, b)))
                .max()
                .unwrap_or(0),
            _ => 0,
        }
    }
    go(e, MAX_DEPTH + 1)
}
