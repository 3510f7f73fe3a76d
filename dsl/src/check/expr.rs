//! Type checking of expressions against a stream's declared fields.

use super::facts::{Decls, Facts, FieldUse};
use super::typed::{TExpr, TExprKind, Value};
use crate::ast::{BinaryOp, Expr, ExprKind, Literal, UnaryOp};
use crate::catalog::{Catalog, ParamType, Returns};
use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::fmt::{field_name, ident};
use crate::types::{Record, RecordField, StreamType, Ty};

/// What an expression can see: the event's declared fields and the source's metadata.
pub struct Scope<'a> {
    pub stream: &'a StreamType,
    /// Names the stream for messages (`source \`orders\``).
    pub describe: &'a str,
}

pub struct ExprChecker<'a> {
    pub catalog: &'a dyn Catalog,
    pub diags: &'a mut Vec<Diagnostic>,
    pub facts: &'a mut Facts,
    pub decls: &'a Decls,
}

impl ExprChecker<'_> {
    pub fn check(&mut self, e: &Expr, scope: &Scope) -> TExpr {
        let span = e.span;
        let t = |kind, ty, nullable| TExpr { kind, ty, nullable, span };
        match &e.kind {
            ExprKind::Error => TExpr::error(span),
            ExprKind::Paren(inner) => self.check(inner, scope),
            ExprKind::Literal(l) => self.literal(l, e),
            ExprKind::List(_) => {
                self.diags.push(
                    Diagnostic::new(Code::TypeMismatch, span, "list literals are only allowed in option values")
                        .label("not allowed in an expression")
                        .help("to test membership write `x in ('a', 'b')`"),
                );
                TExpr::error(span)
            }
            ExprKind::Field(path) => {
                let first = &path[0];
                let record = &scope.stream.record;
                let Some(i) = record.fields.iter().position(|f| f.name == first.name) else {
                    self.unknown_field(
                        &first.name,
                        first.span,
                        &scope.stream.record,
                        scope.describe,
                        scope.stream.open,
                    );
                    return TExpr::error(span);
                };
                let f = &record.fields[i];
                self.used(first.span, f, self.decls.get(record, i));
                let mut cur = TExpr {
                    kind: TExprKind::Field(f.name.clone()),
                    ty: f.ty.clone(),
                    nullable: f.optional,
                    span: first.span,
                };
                for seg in &path[1..] {
                    cur = self.access(cur, seg);
                    if cur.ty == Ty::Error {
                        return TExpr::error(span);
                    }
                }
                TExpr { span, ..cur }
            }
            ExprKind::Access(base, name) => {
                let base = self.check(base, scope);
                let r = self.access(base, name);
                TExpr { span, ..r }
            }
            ExprKind::Meta(name) => match scope.stream.metadata.field(&name.name) {
                Some(m) => {
                    let at =
                        FieldUse { span, name: m.name.clone(), decl: None, ty: m.ty.clone(), optional: m.optional };
                    self.facts.metadata.push(at);
                    t(TExprKind::Meta(m.name.clone()), m.ty.clone(), m.optional)
                }
                None => {
                    let names: Vec<&str> = scope.stream.metadata.names().collect();
                    let d = Diagnostic::new(
                        Code::UnknownMetadata,
                        span,
                        format!("no metadata `@{}` on {}", name.name, scope.describe),
                    )
                    .label("unknown metadata");
                    let d = match did_you_mean(&name.name, names.iter().copied()) {
                        Some(s) => d.did_you_mean(span, &format!("@{s}"), format!("@{}", ident(s))),
                        None if names.is_empty() => d.help("this stream has no metadata"),
                        None => d.help(format!(
                            "available: {}",
                            names.iter().map(|n| format!("`@{n}`")).collect::<Vec<_>>().join(", ")
                        )),
                    };
                    self.diags.push(d);
                    TExpr::error(span)
                }
            },
            ExprKind::Call { name, args } => self.call(name, args, e, scope),
            ExprKind::Unary { op: UnaryOp::Not, expr } => {
                let x = self.check(expr, scope);
                self.expect(&x, &Ty::Bool, "`not` needs a bool");
                let n = x.nullable;
                t(TExprKind::Not(Box::new(x)), Ty::Bool, n)
            }
            ExprKind::Unary { op: UnaryOp::Neg, expr } => {
                let x = self.check(expr, scope);
                if !(x.ty.is_numeric() || x.ty == Ty::Duration) {
                    self.mismatch(x.span, format!("cannot negate {}", x.ty.a()), "expected a number or duration");
                    return TExpr::error(span);
                }
                let (ty, n) = (x.ty.clone(), x.nullable);
                t(TExprKind::Neg(Box::new(x)), ty, n)
            }
            ExprKind::Binary { op, left, right } => {
                let l = self.check(left, scope);
                let r = self.check(right, scope);
                self.binary(*op, l, r, e)
            }
            ExprKind::IsNull { expr, negated } => {
                let x = self.check(expr, scope);
                t(TExprKind::IsNull { expr: Box::new(x), negated: *negated }, Ty::Bool, false)
            }
            ExprKind::InList { expr, list, negated } => {
                let x = self.check(expr, scope);
                let items: Vec<TExpr> = list.iter().map(|i| self.check(i, scope)).collect();
                let mut common = x.ty.clone();
                for i in &items {
                    match self.comparable(&common, i) {
                        Some(c) => common = c,
                        None => self.mismatch(
                            i.span,
                            format!("`in` list item is {}, but the value tested is {}", i.ty.a(), x.ty.a()),
                            format!("expected {}", x.ty),
                        ),
                    }
                }
                let nullable = x.nullable || items.iter().any(|i| i.nullable);
                let list = items.into_iter().map(|i| self.coerce_common(i, &common)).collect();
                let x = self.coerce_common(x, &common);
                t(TExprKind::InList { expr: Box::new(x), list, negated: *negated }, Ty::Bool, nullable)
            }
            ExprKind::Between { expr, low, high, negated } => {
                let x = self.check(expr, scope);
                let lo = self.check(low, scope);
                let hi = self.check(high, scope);
                let mut common = x.ty.clone();
                for b in [&lo, &hi] {
                    match self.comparable(&common, b) {
                        Some(c) => common = c,
                        None => self.mismatch(
                            b.span,
                            format!("`between` bound is {}, but the value is {}", b.ty.a(), x.ty.a()),
                            format!("expected {}", x.ty),
                        ),
                    }
                }
                if matches!(common, Ty::Record(_) | Ty::List(_)) {
                    self.mismatch(x.span, format!("cannot order values of type {}", x.ty), "not comparable");
                }
                let nullable = x.nullable || lo.nullable || hi.nullable;
                let (x, lo, hi) =
                    (self.coerce_common(x, &common), self.coerce_common(lo, &common), self.coerce_common(hi, &common));
                t(
                    TExprKind::Between { expr: Box::new(x), low: Box::new(lo), high: Box::new(hi), negated: *negated },
                    Ty::Bool,
                    nullable,
                )
            }
            ExprKind::Like { expr, pattern, negated, case_insensitive } => {
                let x = self.check(expr, scope);
                let p = self.check(pattern, scope);
                let op = if *case_insensitive { "ilike" } else { "like" };
                self.expect(&x, &Ty::String, &format!("`{op}` matches strings"));
                self.expect(&p, &Ty::String, &format!("a `{op}` pattern is a string"));
                let nullable = x.nullable || p.nullable;
                t(
                    TExprKind::Like {
                        expr: Box::new(x),
                        pattern: Box::new(p),
                        negated: *negated,
                        case_insensitive: *case_insensitive,
                    },
                    Ty::Bool,
                    nullable,
                )
            }
            ExprKind::Case { operand, whens, otherwise } => {
                let op = operand.as_ref().map(|o| self.check(o, scope));
                let mut conds = Vec::new();
                let mut results = Vec::new();
                for (w, r) in whens {
                    let c = self.check(w, scope);
                    match &op {
                        Some(o) => {
                            if self.comparable(&o.ty, &c).is_none() {
                                self.mismatch(
                                    c.span,
                                    format!("`when` value is {}, but the case operand is {}", c.ty.a(), o.ty.a()),
                                    format!("expected {}", o.ty),
                                );
                            }
                        }
                        None => self.expect(&c, &Ty::Bool, "a `when` condition is a bool"),
                    }
                    conds.push(c);
                    results.push(self.check(r, scope));
                }
                let other = otherwise.as_ref().map(|o| self.check(o, scope));
                let mut ty = Ty::Null;
                for r in results.iter().chain(other.iter()) {
                    match ty.unify(&r.ty) {
                        Some(u) => ty = u,
                        None => {
                            self.mismatch(
                                r.span,
                                format!("`case` branches have different types: {} and {}", ty, r.ty),
                                format!("expected {ty}"),
                            );
                            ty = Ty::Error;
                        }
                    }
                }
                let nullable = other.is_none() || results.iter().chain(other.iter()).any(|r| r.nullable);
                let whens = conds.into_iter().zip(results).map(|(c, r)| (c, r.coerce(&ty))).collect();
                let otherwise = other.map(|o| Box::new(o.coerce(&ty)));
                t(TExprKind::Case { operand: op.map(Box::new), whens, otherwise }, ty, nullable)
            }
        }
    }

    fn literal(&mut self, l: &Literal, e: &Expr) -> TExpr {
        let (v, ty) = match l {
            Literal::Null => (Value::Null, Ty::Null),
            Literal::Bool(b) => (Value::Bool(*b), Ty::Bool),
            Literal::Int(i, _) => (Value::Int(*i), Ty::Int),
            Literal::Float(f, _) => (Value::Float(*f), Ty::Float),
            Literal::String(s) => (Value::String(s.clone()), Ty::String),
            Literal::Duration(d, _) => (Value::Duration(*d), Ty::Duration),
            Literal::Size(s, _) => (Value::Int(*s as i64), Ty::Int),
        };
        TExpr { nullable: matches!(v, Value::Null), kind: TExprKind::Literal(v), ty, span: e.span }
    }

    fn access(&mut self, base: TExpr, name: &crate::ast::Ident) -> TExpr {
        match base.ty.clone() {
            Ty::Error => TExpr::error(name.span),
            Ty::Record(r) => match r.fields.iter().position(|f| f.name == name.name) {
                Some(i) => {
                    let f = r.fields[i].clone();
                    self.used(name.span, &f, self.decls.get(&r, i));
                    let (ty, nullable) = (f.ty.clone(), f.optional || base.nullable);
                    let span = base.span.to(name.span);
                    TExpr { kind: TExprKind::Access(Box::new(base), f.name.clone()), ty, nullable, span }
                }
                None => {
                    self.unknown_field(&name.name, name.span, &r, "this record", false);
                    TExpr::error(name.span)
                }
            },
            other => {
                self.diags.push(
                    Diagnostic::new(
                        Code::NotARecord,
                        name.span,
                        format!("cannot read field `{}` of {}", name.name, other.a()),
                    )
                    .label("not a record")
                    .secondary(base.span, format!("this is {}", other.a())),
                );
                TExpr::error(name.span)
            }
        }
    }

    fn used(&mut self, span: crate::span::Span, f: &RecordField, decl: Option<crate::span::Span>) {
        let at = FieldUse { span, name: f.name.clone(), decl, ty: f.ty.clone(), optional: f.optional };
        self.facts.fields.push(at);
    }

    fn unknown_field(&mut self, name: &str, span: crate::span::Span, record: &Record, describe: &str, open: bool) {
        let mut d = Diagnostic::new(Code::UnknownField, span, format!("no field `{name}` in {describe}"))
            .label("unknown field");
        if let Some(s) = did_you_mean(name, record.names()) {
            d = d.did_you_mean(span, s, field_name(s));
        } else if record.fields.is_empty() {
            d = d.help("this stream has no declared fields; give its source a schema with `as Schema`");
        } else {
            let names: Vec<String> = record.names().map(|n| format!("`{n}`")).collect();
            d = d.help(format!("declared fields: {}", names.join(", ")));
        }
        if open {
            d = d.note("undeclared fields pass through to sinks, but an expression can only use a declared field");
        }
        self.diags.push(d);
    }

    fn call(&mut self, name: &crate::ast::Ident, args: &[Expr], e: &Expr, scope: &Scope) -> TExpr {
        let span = e.span;
        if name.name == "env" {
            self.diags.push(
                Diagnostic::new(Code::EnvMisuse, span, "`env()` must be a whole option value")
                    .label("used inside an expression")
                    .help("read settings in a connector option: `topic = env(\"TOPIC\", \"orders\")`"),
            );
            return TExpr::error(span);
        }
        let targs: Vec<TExpr> = args.iter().map(|a| self.check(a, scope)).collect();
        let Some(f) = self.catalog.function(&name.name) else {
            let names = self.catalog.function_names();
            let d = Diagnostic::new(Code::UnknownFunction, name.span, format!("unknown function `{}`", name.name))
                .label("not a built-in function");
            self.diags.push(match did_you_mean(&name.name, names.iter().copied()) {
                Some(s) => d.did_you_mean(name.span, s, ident(s)),
                None => d.help("`phoenix functions` lists the built-in functions"),
            });
            return TExpr::error(span);
        };
        let sig = f.signature();
        let fname = f.name();
        let max = if sig.variadic { usize::MAX } else { sig.params.len() };
        if targs.len() < sig.required || targs.len() > max {
            let expected = if sig.variadic {
                format!("at least {}", sig.required)
            } else if sig.required == sig.params.len() {
                sig.required.to_string()
            } else {
                format!("{} to {}", sig.required, sig.params.len())
            };
            let plural = if expected == "1" { "" } else { "s" };
            self.diags.push(
                Diagnostic::new(
                    Code::WrongArity,
                    span,
                    format!(
                        "`{fname}` takes {expected} argument{plural}, but {} {} given",
                        targs.len(),
                        if targs.len() == 1 { "was" } else { "were" }
                    ),
                )
                .label(format!("{} argument{}", targs.len(), if targs.len() == 1 { "" } else { "s" }))
                .help(format!("the signature is `{}`", sig.display(fname))),
            );
            return TExpr::error(span);
        }
        // Check each argument against its parameter; unify the `Same`/`Numeric` ones.
        let mut unified = Ty::Null;
        let mut ok = true;
        let param_of = |i: usize| &sig.params[i.min(sig.params.len() - 1)];
        for (i, a) in targs.iter().enumerate() {
            let p = param_of(i);
            let good = match &p.ty {
                ParamType::Exact(t) => a.ty.fits(t),
                ParamType::Numeric => a.ty.is_numeric(),
                ParamType::Scalar => !matches!(a.ty, Ty::List(_) | Ty::Record(_)),
                ParamType::Same => true,
            };
            if matches!(p.ty, ParamType::Same | ParamType::Numeric) && good {
                match unified.unify(&a.ty) {
                    Some(u) => unified = u,
                    None => {
                        self.diags.push(
                            Diagnostic::new(
                                Code::WrongArgType,
                                a.span,
                                format!(
                                    "argument `{}` of `{fname}` is {}, but an earlier argument is {}",
                                    p.name,
                                    a.ty.a(),
                                    unified.a()
                                ),
                            )
                            .label(format!("expected {unified}"))
                            .help(format!("the signature is `{}`", sig.display(fname))),
                        );
                        ok = false;
                        continue;
                    }
                }
            }
            if !good {
                let want = match &p.ty {
                    ParamType::Exact(t) => t.a(),
                    ParamType::Numeric => "a number".into(),
                    _ => "a scalar".into(),
                };
                self.diags.push(
                    Diagnostic::new(
                        Code::WrongArgType,
                        a.span,
                        format!("argument `{}` of `{fname}` must be {want}, found {}", p.name, a.ty.a()),
                    )
                    .label(format!("expected {want}"))
                    .help(format!("the signature is `{}`", sig.display(fname))),
                );
                ok = false;
            }
        }
        if !ok {
            return TExpr::error(span);
        }
        let ret = match &sig.returns {
            Returns::Exact(t) => t.clone(),
            Returns::Unified => {
                if unified == Ty::Null {
                    Ty::String
                } else {
                    unified.clone()
                }
            }
        };
        let nullable = f.may_return_null()
            || match fname {
                // NULL only when every argument may be NULL.
                "coalesce" => targs.iter().all(|a| a.nullable),
                _ => targs.iter().any(|a| a.nullable),
            };
        let implicit = match f.implicit_metadata() {
            None => None,
            Some(m) => match scope.stream.metadata.field(m) {
                Some(field) => Some(TExpr {
                    kind: TExprKind::Meta(field.name.clone()),
                    ty: field.ty.clone(),
                    nullable: field.optional,
                    span,
                }),
                None => {
                    self.diags.push(
                        Diagnostic::new(
                            Code::UnknownMetadata,
                            span,
                            format!("`{fname}()` reads `@{m}`, which {} does not have", scope.describe),
                        )
                        .label(format!("needs `@{m}`"))
                        .help("call it on events straight from a source, before `.errors` or a sink"),
                    );
                    return TExpr::error(span);
                }
            },
        };
        let args = implicit
            .into_iter()
            .chain(targs.into_iter().enumerate().map(|(i, a)| match &param_of(i).ty {
                ParamType::Exact(t) => a.coerce(t),
                ParamType::Same | ParamType::Numeric => a.coerce(&unified),
                ParamType::Scalar => a,
            }))
            .collect();
        TExpr { kind: TExprKind::Call(fname, args), ty: ret, nullable, span }
    }

    fn binary(&mut self, op: BinaryOp, l: TExpr, r: TExpr, e: &Expr) -> TExpr {
        let span = e.span;
        let nullable = l.nullable || r.nullable;
        let mk = |l: TExpr, r: TExpr, ty: Ty| TExpr {
            kind: TExprKind::Binary(op, Box::new(l), Box::new(r)),
            ty,
            nullable,
            span,
        };
        if l.ty == Ty::Error || r.ty == Ty::Error {
            return TExpr::error(span);
        }
        match op {
            BinaryOp::And | BinaryOp::Or => {
                self.expect(&l, &Ty::Bool, &format!("`{}` needs bools", op.symbol()));
                self.expect(&r, &Ty::Bool, &format!("`{}` needs bools", op.symbol()));
                mk(l.coerce(&Ty::Bool), r.coerce(&Ty::Bool), Ty::Bool)
            }
            BinaryOp::Concat => {
                for x in [&l, &r] {
                    if matches!(x.ty, Ty::List(_) | Ty::Record(_)) {
                        self.mismatch(x.span, format!("cannot concatenate {}", x.ty.a()), "expected a string");
                        return TExpr::error(span);
                    }
                }
                mk(l.coerce(&Ty::String), r.coerce(&Ty::String), Ty::String)
            }
            op if op.is_comparison() => {
                if matches!(l.kind, TExprKind::Literal(Value::Null))
                    || matches!(r.kind, TExprKind::Literal(Value::Null))
                {
                    let negated = op == BinaryOp::NotEq;
                    self.diags.push(
                        Diagnostic::new(Code::NullComparison, span, "comparison with `null` is never true")
                            .label("always NULL, so a filter drops every event")
                            .help(if negated { "write `x is not null`" } else { "write `x is null`" }),
                    );
                }
                let Some(common) = self.comparable(&l.ty, &r).or_else(|| self.comparable(&r.ty, &l)) else {
                    self.diags.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            span,
                            format!("cannot compare {} with {}", l.ty.a(), r.ty.a()),
                        )
                        .label(format!("{} {} {}", l.ty, op.symbol(), r.ty))
                        .maybe_help(compare_help(&l, &r)),
                    );
                    return TExpr::error(span);
                };
                if matches!(common, Ty::Record(_) | Ty::List(_)) {
                    self.mismatch(
                        span,
                        format!("cannot compare values of type {common}"),
                        "lists and records are not comparable",
                    );
                    return TExpr::error(span);
                }
                if common == Ty::Bool && !matches!(op, BinaryOp::Eq | BinaryOp::NotEq) {
                    self.mismatch(span, format!("cannot order values of type {common}"), "only `=` and `!=` apply");
                    return TExpr::error(span);
                }
                let (l, r) = (self.coerce_common(l, &common), self.coerce_common(r, &common));
                mk(l, r, Ty::Bool)
            }
            _ => self.arithmetic(op, l, r, span, nullable),
        }
    }

    fn arithmetic(&mut self, op: BinaryOp, l: TExpr, r: TExpr, span: crate::span::Span, nullable: bool) -> TExpr {
        use Ty::*;
        let result = match (op, &l.ty, &r.ty) {
            (_, a, b) if a.is_numeric() && b.is_numeric() => a.unify(b).map(|t| if t == Null { Int } else { t }),
            (BinaryOp::Sub, Timestamp, Timestamp) => Some(Duration),
            (BinaryOp::Add | BinaryOp::Sub, Timestamp, Duration) => Some(Timestamp),
            (BinaryOp::Add, Duration, Timestamp) => Some(Timestamp),
            (BinaryOp::Add | BinaryOp::Sub, Duration, Duration) => Some(Duration),
            _ => None,
        };
        let Some(ty) = result else {
            let help = if op == BinaryOp::Add && (l.ty == String || r.ty == String) {
                Some("use `||` to concatenate strings".to_string())
            } else {
                None
            };
            self.diags.push(
                Diagnostic::new(
                    Code::TypeMismatch,
                    span,
                    format!("cannot apply `{}` to {} and {}", op.symbol(), l.ty, r.ty),
                )
                .label(format!("{} {} {}", l.ty, op.symbol(), r.ty))
                .maybe_help(
                    help.or_else(|| Some("arithmetic needs numbers (or timestamps and durations for + and -)".into())),
                ),
            );
            return TExpr::error(span);
        };
        let (l, r) = if ty == Int || ty == Float { (l.coerce(&ty), r.coerce(&ty)) } else { (l, r) };
        TExpr { kind: TExprKind::Binary(op, Box::new(l), Box::new(r)), ty, nullable, span }
    }

    /// The type `a` and `b` are compared as, if they can be compared. A string literal compared
    /// with a timestamp is read as an RFC 3339 timestamp.
    fn comparable(&mut self, a: &Ty, b: &TExpr) -> Option<Ty> {
        if *a == Ty::Timestamp && b.ty == Ty::String && matches!(b.kind, TExprKind::Literal(_)) {
            return Some(Ty::Timestamp);
        }
        a.unify(&b.ty)
    }

    /// Convert to the common comparison type, parsing string literals as timestamps.
    fn coerce_common(&mut self, x: TExpr, common: &Ty) -> TExpr {
        if *common == Ty::Timestamp
            && x.ty == Ty::String
            && let TExprKind::Literal(Value::String(s)) = &x.kind
        {
            return match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(t) => match t.timestamp_nanos_opt() {
                    Some(n) => TExpr {
                        kind: TExprKind::Literal(Value::Timestamp(n)),
                        ty: Ty::Timestamp,
                        nullable: false,
                        span: x.span,
                    },
                    None => {
                        self.diags.push(
                            Diagnostic::new(Code::InvalidLiteral, x.span, "timestamp out of range")
                                .label("years 1677 to 2262 fit"),
                        );
                        TExpr::error(x.span)
                    }
                },
                Err(e) => {
                    self.diags.push(
                        Diagnostic::new(
                            Code::InvalidLiteral,
                            x.span,
                            format!("`{s}` is not an RFC 3339 timestamp ({e})"),
                        )
                        .label("compared with a timestamp")
                        .help("write it like '2026-01-31T12:00:00Z'"),
                    );
                    TExpr::error(x.span)
                }
            };
        }
        x.coerce(common)
    }

    fn expect(&mut self, x: &TExpr, want: &Ty, why: &str) {
        if !x.ty.fits(want) {
            self.mismatch(x.span, format!("expected {want}, found {}", x.ty.a()), why.to_string());
        }
    }

    pub fn mismatch(&mut self, span: crate::span::Span, message: String, label: impl Into<String>) {
        self.diags.push(Diagnostic::new(Code::TypeMismatch, span, message).label(label));
    }
}

fn compare_help(a: &TExpr, b: &TExpr) -> Option<String> {
    for (x, y) in [(a, b), (b, a)] {
        if let TExprKind::Literal(Value::String(s)) = &x.kind
            && y.ty.is_numeric()
            && s.parse::<f64>().is_ok()
        {
            return Some(format!("remove the quotes: `{s}`"));
        }
        if let TExprKind::Literal(Value::Int(_) | Value::Float(_)) = &x.kind
            && y.ty == Ty::String
        {
            return Some("the field is a string: quote the number ('42'), or declare the field as a number".into());
        }
    }
    None
}
