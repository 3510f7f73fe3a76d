//! The syntax tree of one `.phx` file, as written (before names are resolved or types checked).
//!
//! Every node keeps its [`Span`]. The tree is plain data: the parser builds it, the checker and
//! the formatter read it.

use crate::span::Span;

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// One parsed file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Module {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Import(Import),
    Schema(SchemaDecl),
    Source(ConnectorDecl),
    Sink(ConnectorDecl),
    Flow(FlowDecl),
    Pipeline(Pipeline),
    Test(TestDecl),
    Deploy(DeployDecl),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Import(i) => i.span,
            Item::Schema(s) => s.span,
            Item::Source(c) | Item::Sink(c) => c.span,
            Item::Flow(f) => f.span,
            Item::Pipeline(p) => p.span,
            Item::Test(t) => t.span,
            Item::Deploy(d) => d.span,
        }
    }
}

/// `import "path.phx"`
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    pub path: String,
    pub path_span: Span,
    pub span: Span,
}

/// `schema Name { ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaDecl {
    pub name: Ident,
    pub record: RecordType,
    pub span: Span,
}

/// `{ field: type, ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct RecordType {
    pub fields: Vec<FieldDecl>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldDecl {
    pub name: Ident,
    pub ty: TypeExpr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TypeExpr {
    pub kind: TypeExprKind,
    /// Written with `?`: the field may be absent or null.
    pub optional: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TypeExprKind {
    /// `string`, `int`, ... or a schema name.
    Named(Ident),
    List(Box<TypeExpr>),
    Record(RecordType),
}

/// `source name = connector { options } as Schema`, or the same with `sink`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorDecl {
    pub name: Ident,
    pub connector: Ident,
    pub options: Options,
    pub schema: Option<SchemaRef>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SchemaRef {
    Named(Ident),
    Inline(RecordType),
}

impl SchemaRef {
    pub fn span(&self) -> Span {
        match self {
            SchemaRef::Named(i) => i.span,
            SchemaRef::Inline(r) => r.span,
        }
    }
}

/// `{ name = value, ... }`. `span` is `None` when the block was omitted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Options {
    pub entries: Vec<OptionEntry>,
    pub span: Option<Span>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OptionEntry {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `flow name = pipeline`
#[derive(Debug, Clone, PartialEq)]
pub struct FlowDecl {
    pub name: Ident,
    pub pipeline: Pipeline,
    pub span: Span,
}

/// `input | stage | ...`
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub input: Input,
    pub stages: Vec<Stage>,
    /// Written as a `route input ... { }` statement rather than `input | route ... { }`.
    pub route_statement: bool,
    pub span: Span,
}

/// What a pipeline reads: one stream, or `merge(a, b, ...)`.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Stream(StreamRef),
    /// The events of every stream as one stream (at least two, as written).
    Merge {
        streams: Vec<StreamRef>,
        span: Span,
    },
}

impl Input {
    pub fn span(&self) -> Span {
        match self {
            Input::Stream(s) => s.span,
            Input::Merge { span, .. } => *span,
        }
    }

    /// The streams read, as written: one, or each of a merge's.
    pub fn streams(&self) -> &[StreamRef] {
        match self {
            Input::Stream(s) => std::slice::from_ref(s),
            Input::Merge { streams, .. } => streams,
        }
    }
}

/// A stream a pipeline reads: `orders`, `orders.errors`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRef {
    pub name: Ident,
    /// The `.errors` port, with its span.
    pub errors: Option<Span>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub kind: StageKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StageKind {
    Where(Expr),
    Select(Vec<SelectItem>),
    Route(Route),
    Drop,
    Sink(Ident),
}

impl StageKind {
    /// Sinks, `drop` and routes end a pipeline.
    pub fn is_terminal(&self) -> bool {
        matches!(self, StageKind::Route(_) | StageKind::Drop | StageKind::Sink(_))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    /// `*`: every field of the input, declared or not.
    Star(Span),
    Expr {
        expr: Expr,
        alias: Option<Ident>,
        span: Span,
    },
}

/// `route [all] [by key] { arms }`
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `all`: an event goes to every matching arm, not only the first.
    pub all: Option<Span>,
    pub key: Option<Expr>,
    pub arms: Vec<Arm>,
    pub arms_span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    pub pattern: ArmPattern,
    pub target: Vec<Stage>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ArmPattern {
    /// `'a' | 'b'`, compared with the route key.
    Values(Vec<Expr>),
    /// `when <predicate>`
    When(Expr),
    /// `else`
    Else(Span),
}

/// `test "name" { ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct TestDecl {
    pub name: String,
    pub name_span: Span,
    pub inputs: Vec<TestData>,
    pub expects: Vec<TestData>,
    /// Inputs and expectations in the order written (for the formatter).
    pub order: Vec<TestStmtKind>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStmtKind {
    Input,
    Expect,
}

/// `input name = json` or `expect name = json`
#[derive(Debug, Clone, PartialEq)]
pub struct TestData {
    pub target: Ident,
    pub value: Json,
    pub span: Span,
}

/// JSON test data, kept in written order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number as written, so no precision is lost.
    Number(String),
    String(String),
    Array(Vec<Json>, Span),
    Object(Vec<(String, Json)>, Span),
}

/// `deploy { ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct DeployDecl {
    pub options: Options,
    pub span: Span,
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Literal(Literal),
    /// `a.b.c`: a field, then nested fields.
    Field(Vec<Ident>),
    /// `expr.field`, where `expr` is not a plain field (`f(x).a`).
    Access(Box<Expr>, Ident),
    /// `@name`
    Meta(Ident),
    Call {
        name: Ident,
        args: Vec<Expr>,
    },
    Unary {
        op: UnaryOp,
        expr: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
        case_insensitive: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    List(Vec<Expr>),
    /// `( expr )`, kept so the formatter and spans stay faithful.
    Paren(Box<Expr>),
    /// Stands in for an expression the parser already reported an error about.
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    /// The text is kept as written for the formatter.
    Int(i64, String),
    Float(f64, String),
    String(String),
    /// Nanoseconds, with the text as written (`250ms`).
    Duration(i64, String),
    /// Bytes, with the text as written (`10MiB`).
    Size(u64, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Concat,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "or",
            BinaryOp::And => "and",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::Concat => "||",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
        }
    }

    /// Binding strength; higher binds tighter. Matches the grammar's levels.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq | BinaryOp::NotEq | BinaryOp::Lt | BinaryOp::LtEq | BinaryOp::Gt | BinaryOp::GtEq => 4,
            BinaryOp::Concat => 5,
            BinaryOp::Add | BinaryOp::Sub => 6,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => 7,
        }
    }

    pub fn is_comparison(self) -> bool {
        self.precedence() == 4
    }
}

impl Expr {
    /// The expression with any parentheses around it removed.
    pub fn unparen(&self) -> &Expr {
        let mut e = self;
        while let ExprKind::Paren(inner) = &e.kind {
            e = inner;
        }
        e
    }

    /// Structural equality ignoring spans and parentheses (for duplicate-arm warnings).
    pub fn same_as(&self, other: &Expr) -> bool {
        use ExprKind::*;
        let (a, b) = (self.unparen(), other.unparen());
        let all = |x: &[Expr], y: &[Expr]| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.same_as(q));
        let names = |x: &[Ident], y: &[Ident]| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.name == q.name);
        match (&a.kind, &b.kind) {
            (Literal(x), Literal(y)) => literal_eq(x, y),
            (Field(x), Field(y)) => names(x, y),
            (Access(x, f), Access(y, g)) => f.name == g.name && x.same_as(y),
            (Meta(x), Meta(y)) => x.name == y.name,
            (Call { name: n, args: x }, Call { name: m, args: y }) => n.name == m.name && all(x, y),
            (Unary { op: o, expr: x }, Unary { op: p, expr: y }) => o == p && x.same_as(y),
            (Binary { op: o, left: l1, right: r1 }, Binary { op: p, left: l2, right: r2 }) => {
                o == p && l1.same_as(l2) && r1.same_as(r2)
            }
            (IsNull { expr: x, negated: n }, IsNull { expr: y, negated: m }) => n == m && x.same_as(y),
            (InList { expr: x, list: l, negated: n }, InList { expr: y, list: k, negated: m }) => {
                n == m && x.same_as(y) && all(l, k)
            }
            (
                Between { expr: x, low: l1, high: h1, negated: n },
                Between { expr: y, low: l2, high: h2, negated: m },
            ) => n == m && x.same_as(y) && l1.same_as(l2) && h1.same_as(h2),
            (
                Like { expr: x, pattern: p, negated: n, case_insensitive: c },
                Like { expr: y, pattern: q, negated: m, case_insensitive: d },
            ) => n == m && c == d && x.same_as(y) && p.same_as(q),
            (List(x), List(y)) => all(x, y),
            _ => false,
        }
    }
}

/// Literal equality by value (`1_000` equals `1000`; `10s` equals `10000ms`).
pub fn literal_eq(a: &Literal, b: &Literal) -> bool {
    match (a, b) {
        (Literal::Null, Literal::Null) => true,
        (Literal::Bool(x), Literal::Bool(y)) => x == y,
        (Literal::Int(x, _), Literal::Int(y, _)) => x == y,
        (Literal::Float(x, _), Literal::Float(y, _)) => x == y,
        (Literal::Int(x, _), Literal::Float(y, _)) | (Literal::Float(y, _), Literal::Int(x, _)) => *x as f64 == *y,
        (Literal::String(x), Literal::String(y)) => x == y,
        (Literal::Duration(x, _), Literal::Duration(y, _)) => x == y,
        (Literal::Size(x, _), Literal::Size(y, _)) => x == y,
        _ => false,
    }
}
