//! Typed expressions → DataFusion logical expressions, with every type made explicit so the
//! engine can build physical expressions without a type-coercion pass.

use crate::ast::BinaryOp;
use crate::catalog::Catalog;
use crate::check::typed::{TExpr, TExprKind, Value};
use crate::plan::graph::FlowGraph;
use crate::types::Ty;
use arrow_schema::Field;
use datafusion_common::{Column, ScalarValue};
use datafusion_expr::expr::{Between, BinaryExpr, Case, Cast, InList, Like, ScalarFunction};
use datafusion_expr::{Expr, Operator, ReturnFieldArgs};
use std::sync::Arc;

/// A typed expression that cannot be lowered: it still carries a checker error.
#[derive(Debug, thiserror::Error)]
#[error("expression at bytes {start}..{end} has unresolved errors; check the flow first")]
pub struct LowerError {
    pub start: u32,
    pub end: u32,
}

/// Lower every expression of a checked flow.
pub fn lower_flow(flow: FlowGraph<TExpr>, catalog: &dyn Catalog) -> Result<FlowGraph<Expr>, LowerError> {
    flow.try_map_exprs(|e| lower(&e, catalog))
}

pub fn lower(e: &TExpr, catalog: &dyn Catalog) -> Result<Expr, LowerError> {
    let b = |x: &TExpr| lower(x, catalog).map(Box::new);
    Ok(match &e.kind {
        TExprKind::Error => return Err(LowerError { start: e.span.start, end: e.span.end }),
        TExprKind::Literal(v) => Expr::Literal(scalar(v, &e.ty), None),
        TExprKind::Field(name) => Expr::Column(Column::new_unqualified(name)),
        TExprKind::Meta(name) => Expr::Column(Column::new_unqualified(format!("@{name}"))),
        TExprKind::Access(base, field) => Expr::ScalarFunction(ScalarFunction::new_udf(
            catalog.get_field(),
            vec![lower(base, catalog)?, Expr::Literal(ScalarValue::Utf8(Some(field.clone())), None)],
        )),
        TExprKind::Call(name, args) => {
            let f = catalog.function(name).ok_or(LowerError { start: e.span.start, end: e.span.end })?;
            let udf = f.udf();
            let lowered = args.iter().map(|a| lower(a, catalog)).collect::<Result<Vec<_>, _>>()?;
            let want = e.ty.to_arrow();
            // DataFusion's kernels may return a different width (`length` gives Int32) or
            // timezone; cast to the Phoenix type so downstream types are exactly as checked.
            let fields: Vec<Arc<Field>> =
                args.iter().map(|a| Arc::new(Field::new("arg", a.ty.to_arrow(), a.nullable))).collect();
            let scalars: Vec<Option<&ScalarValue>> = vec![None; fields.len()];
            let got = udf.return_field_from_args(ReturnFieldArgs { arg_fields: &fields, scalar_arguments: &scalars });
            let call = Expr::ScalarFunction(ScalarFunction::new_udf(udf, lowered));
            match got {
                Ok(field) if field.data_type() == &want => call,
                _ => Expr::Cast(Cast::new(Box::new(call), want)),
            }
        }
        TExprKind::Not(x) => Expr::Not(b(x)?),
        TExprKind::Neg(x) => Expr::Negative(b(x)?),
        TExprKind::Binary(op, l, r) => Expr::BinaryExpr(BinaryExpr::new(b(l)?, operator(*op), b(r)?)),
        TExprKind::IsNull { expr, negated: false } => Expr::IsNull(b(expr)?),
        TExprKind::IsNull { expr, negated: true } => Expr::IsNotNull(b(expr)?),
        TExprKind::InList { expr, list, negated } => Expr::InList(InList::new(
            b(expr)?,
            list.iter().map(|x| lower(x, catalog)).collect::<Result<_, _>>()?,
            *negated,
        )),
        TExprKind::Between { expr, low, high, negated } => {
            Expr::Between(Between::new(b(expr)?, *negated, b(low)?, b(high)?))
        }
        TExprKind::Like { expr, pattern, negated, case_insensitive } => {
            Expr::Like(Like::new(*negated, b(expr)?, b(pattern)?, None, *case_insensitive))
        }
        TExprKind::Case { operand, whens, otherwise } => Expr::Case(Case::new(
            operand.as_deref().map(|o| lower(o, catalog).map(Box::new)).transpose()?,
            whens.iter().map(|(w, t)| Ok((b(w)?, b(t)?))).collect::<Result<_, LowerError>>()?,
            otherwise.as_deref().map(|o| lower(o, catalog).map(Box::new)).transpose()?,
        )),
        TExprKind::Cast(x) => Expr::Cast(Cast::new(b(x)?, e.ty.to_arrow())),
    })
}

fn operator(op: BinaryOp) -> Operator {
    match op {
        BinaryOp::Or => Operator::Or,
        BinaryOp::And => Operator::And,
        BinaryOp::Eq => Operator::Eq,
        BinaryOp::NotEq => Operator::NotEq,
        BinaryOp::Lt => Operator::Lt,
        BinaryOp::LtEq => Operator::LtEq,
        BinaryOp::Gt => Operator::Gt,
        BinaryOp::GtEq => Operator::GtEq,
        BinaryOp::Concat => Operator::StringConcat,
        BinaryOp::Add => Operator::Plus,
        BinaryOp::Sub => Operator::Minus,
        BinaryOp::Mul => Operator::Multiply,
        BinaryOp::Div => Operator::Divide,
        BinaryOp::Mod => Operator::Modulo,
    }
}

fn scalar(v: &Value, ty: &Ty) -> ScalarValue {
    match v {
        Value::Null => ScalarValue::try_from(&ty.to_arrow()).unwrap_or(ScalarValue::Null),
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::Int(i) => ScalarValue::Int64(Some(*i)),
        Value::Float(f) => ScalarValue::Float64(Some(*f)),
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Timestamp(n) => ScalarValue::TimestampNanosecond(Some(*n), Some("UTC".into())),
        Value::Duration(n) => ScalarValue::DurationNanosecond(Some(*n)),
    }
}
