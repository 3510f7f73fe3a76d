//! Checking static option values (`topic = "orders"`, `linger = 5ms`, `env("X", "d")`).

use crate::ast::{Expr, ExprKind, Literal};
use crate::catalog::OptionType;
use crate::diagnostic::{Code, Diagnostic};
use crate::plan::graph::OptionValue;

/// The checked value of a static option.
pub fn value(e: &Expr, ty: &OptionType, name: &str) -> Result<OptionValue, Diagnostic> {
    let e = e.unparen();
    if let ExprKind::Call { name: f, args } = &e.kind
        && f.name == "env"
    {
        return env(e, args, ty, name);
    }
    let lit = match &e.kind {
        ExprKind::Literal(l) => Some(l),
        _ => None,
    };
    let got = match (ty, lit, &e.kind) {
        (OptionType::String, Some(Literal::String(s)), _) => Some(OptionValue::String(s.clone())),
        (OptionType::Int, Some(Literal::Int(i, _)), _) => Some(OptionValue::Int(*i)),
        (OptionType::Float, Some(Literal::Int(i, _)), _) => Some(OptionValue::Float(*i as f64)),
        (OptionType::Float, Some(Literal::Float(f, _)), _) => Some(OptionValue::Float(*f)),
        (OptionType::Bool, Some(Literal::Bool(b)), _) => Some(OptionValue::Bool(*b)),
        (OptionType::Duration, Some(Literal::Duration(d, _)), _) => Some(OptionValue::Duration(*d)),
        (OptionType::Duration, Some(Literal::Int(0, _)), _) => Some(OptionValue::Duration(0)),
        (OptionType::Size, Some(Literal::Size(s, _)), _) => Some(OptionValue::Size(*s)),
        (OptionType::Size, Some(Literal::Int(i, _)), _) if *i >= 0 => Some(OptionValue::Size(*i as u64)),
        (OptionType::Enum(words), Some(Literal::String(s)), _) if words.contains(&s.as_str()) => {
            Some(OptionValue::String(s.clone()))
        }
        // A bare word reads naturally for enums: `start = earliest`.
        (OptionType::Enum(words), None, ExprKind::Field(path))
            if path.len() == 1 && words.contains(&path[0].name.as_str()) =>
        {
            Some(OptionValue::String(path[0].name.clone()))
        }
        (OptionType::List(inner), None, ExprKind::List(items)) => {
            let values = items.iter().map(|i| value(i, inner, name)).collect::<Result<Vec<_>, _>>()?;
            Some(OptionValue::List(values))
        }
        (OptionType::List(inner), _, _) => Some(OptionValue::List(vec![value(e, inner, name)?])),
        _ => None,
    };
    got.ok_or_else(|| mismatch(e, ty, name))
}

fn env(e: &Expr, args: &[Expr], ty: &OptionType, name: &str) -> Result<OptionValue, Diagnostic> {
    let var = match args.first().map(|a| &a.unparen().kind) {
        Some(ExprKind::Literal(Literal::String(s))) if !s.is_empty() => s.clone(),
        _ => {
            return Err(Diagnostic::new(
                Code::EnvMisuse,
                e.span,
                "`env` takes the variable's name as a string literal",
            )
            .label("expected `env(\"NAME\")` or `env(\"NAME\", default)`"));
        }
    };
    if args.len() > 2 {
        return Err(Diagnostic::new(
            Code::EnvMisuse,
            e.span,
            format!("`env` takes 1 or 2 arguments, {} given", args.len()),
        )
        .label("too many arguments")
        .help("`env(\"NAME\", default)`"));
    }
    let default = match args.get(1) {
        None => None,
        Some(d) => {
            if let ExprKind::Call { name: f, .. } = &d.unparen().kind
                && f.name == "env"
            {
                return Err(Diagnostic::new(Code::EnvMisuse, d.span, "an `env` default cannot be another `env`")
                    .label("nested env"));
            }
            Some(Box::new(value(d, ty, name)?))
        }
    };
    Ok(OptionValue::Env { name: var, default })
}

/// `env()` where a per-event expression is expected.
pub fn reject_env(e: &Expr) -> Option<Diagnostic> {
    match &e.unparen().kind {
        ExprKind::Call { name, .. } if name.name == "env" => Some(
            Diagnostic::new(Code::EnvMisuse, e.span, "this option is computed per event and cannot read `env()`")
                .label("per-event option")
                .help("use a field of the event or a literal"),
        ),
        _ => None,
    }
}

fn mismatch(e: &Expr, ty: &OptionType, name: &str) -> Diagnostic {
    let found = match &e.kind {
        ExprKind::Literal(Literal::String(s)) => format!("the string {s:?}"),
        ExprKind::Literal(Literal::Int(i, _)) => format!("the integer {i}"),
        ExprKind::Literal(Literal::Float(..)) => "a float".into(),
        ExprKind::Literal(Literal::Bool(b)) => format!("`{b}`"),
        ExprKind::Literal(Literal::Null) => "`null`".into(),
        ExprKind::Literal(Literal::Duration(_, t)) => format!("the duration `{t}`"),
        ExprKind::Literal(Literal::Size(_, t)) => format!("the size `{t}`"),
        ExprKind::List(_) => "a list".into(),
        ExprKind::Field(_) => "a field reference".into(),
        _ => "an expression".into(),
    };
    let help = match (ty, &e.kind) {
        (OptionType::Duration, ExprKind::Literal(Literal::Int(..))) => {
            Some("add a unit: `250ms`, `5s`, `1m`".to_string())
        }
        (OptionType::String, ExprKind::Field(p)) if p.len() == 1 => Some(format!("quote it: `\"{}\"`", p[0].name)),
        (OptionType::String | OptionType::Enum(_), ExprKind::Literal(Literal::Int(i, _))) => {
            Some(format!("quote it: `\"{i}\"`"))
        }
        (OptionType::Int | OptionType::Float, ExprKind::Literal(Literal::String(s))) if s.parse::<f64>().is_ok() => {
            Some(format!("remove the quotes: `{s}`"))
        }
        (OptionType::Enum(_), _) => None,
        _ => Some("settings can also come from the environment: `env(\"NAME\", default)`".to_string()),
    };
    Diagnostic::new(Code::OptionType, e.span, format!("option `{name}` expects {ty}, found {found}"))
        .label(format!("expected {ty}"))
        .maybe_help(help)
}
