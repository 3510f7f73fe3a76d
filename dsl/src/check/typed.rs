//! Typed expressions: the checker's output for every expression, with every implicit coercion
//! made explicit so lowering to DataFusion needs no type inference of its own.

use crate::ast::BinaryOp;
use crate::span::Span;
use crate::types::Ty;

#[derive(Debug, Clone, PartialEq)]
pub struct TExpr {
    pub kind: TExprKind,
    pub ty: Ty,
    /// May evaluate to NULL.
    pub nullable: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TExprKind {
    Literal(Value),
    /// A top-level field of the event.
    Field(String),
    /// `@name` metadata.
    Meta(String),
    /// A field of a record value.
    Access(Box<TExpr>, String),
    Call(&'static str, Vec<TExpr>),
    Not(Box<TExpr>),
    Neg(Box<TExpr>),
    Binary(BinaryOp, Box<TExpr>, Box<TExpr>),
    IsNull {
        expr: Box<TExpr>,
        negated: bool,
    },
    InList {
        expr: Box<TExpr>,
        list: Vec<TExpr>,
        negated: bool,
    },
    Between {
        expr: Box<TExpr>,
        low: Box<TExpr>,
        high: Box<TExpr>,
        negated: bool,
    },
    Like {
        expr: Box<TExpr>,
        pattern: Box<TExpr>,
        negated: bool,
        case_insensitive: bool,
    },
    Case {
        operand: Option<Box<TExpr>>,
        whens: Vec<(TExpr, TExpr)>,
        otherwise: Option<Box<TExpr>>,
    },
    /// An implicit conversion to `ty` (int → float, scalar → string for `||`).
    Cast(Box<TExpr>),
    /// Stands in for an expression that already produced an error.
    Error,
}

/// A constant value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    /// Nanoseconds since the epoch.
    Timestamp(i64),
    /// Nanoseconds.
    Duration(i64),
}

impl TExpr {
    pub fn error(span: Span) -> TExpr {
        TExpr { kind: TExprKind::Error, ty: Ty::Error, nullable: true, span }
    }

    /// Convert to `want` where the language converts implicitly; the caller has checked `fits`.
    pub fn coerce(self, want: &Ty) -> TExpr {
        if &self.ty == want || self.ty == Ty::Error || want.is_wild() {
            return self;
        }
        match self.kind {
            TExprKind::Literal(Value::Null) => TExpr { ty: want.clone(), ..self },
            TExprKind::Literal(Value::Int(i)) if *want == Ty::Float => {
                TExpr { kind: TExprKind::Literal(Value::Float(i as f64)), ty: Ty::Float, ..self }
            }
            kind => {
                let (nullable, span) = (self.nullable, self.span);
                let inner = TExpr { kind, ty: self.ty, nullable, span };
                TExpr { kind: TExprKind::Cast(Box::new(inner)), ty: want.clone(), nullable, span }
            }
        }
    }

    /// The boolean constant this expression always is, if it is one (`true`, `1 = 1` is not folded).
    pub fn as_bool_literal(&self) -> Option<bool> {
        match &self.kind {
            TExprKind::Literal(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }
}
