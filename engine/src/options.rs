//! Connector options as a running flow sees them: defaults applied, `env()` resolved and
//! `--set` overrides parsed against each option's declared type.

use phoenix_dsl::catalog::{ConnectorSpec, OptionType};
use phoenix_dsl::plan::graph::OptionValue;
use phoenix_dsl::types::{duration_unit_ns, size_unit_bytes};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("option `{option}` of `{node}`: {message}")]
    Invalid { node: String, option: String, message: String },
    #[error("`{node}` needs option `{option}` (set it in the flow, or with --set {node}.{option}=VALUE)")]
    Missing { node: String, option: String },
}

/// Values for `env("NAME")` and per-node overrides, from `--set`.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    /// `--set NAME=value`: read by `env("NAME")` before the process environment.
    pub env: HashMap<String, String>,
    /// `--set node.option=value`: replaces the option as written in the flow.
    pub overrides: HashMap<(String, String), String>,
}

impl Settings {
    /// Parse `--set` arguments: `node.option=value` or `NAME=value`.
    pub fn parse(args: &[String]) -> Result<Settings, String> {
        let mut s = Settings::default();
        for a in args {
            let (k, v) = a.split_once('=').ok_or_else(|| format!("`--set {a}`: expected NAME=VALUE"))?;
            match k.split_once('.') {
                Some((node, opt)) => s.overrides.insert((node.to_string(), opt.to_string()), v.to_string()),
                None => s.env.insert(k.to_string(), v.to_string()),
            };
        }
        Ok(s)
    }

    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned().or_else(|| std::env::var(name).ok())
    }
}

/// The resolved static options of one source or sink.
#[derive(Debug, Clone)]
pub struct Options {
    node: String,
    values: HashMap<String, OptionValue>,
}

impl Options {
    /// Resolve `written` (as checked) against `spec`: defaults, env, overrides.
    pub fn resolve(
        node: &str,
        spec: &ConnectorSpec,
        written: &[(String, OptionValue)],
        settings: &Settings,
    ) -> Result<Options, OptionError> {
        let invalid = |option: &str, message: String| OptionError::Invalid {
            node: node.to_string(),
            option: option.to_string(),
            message,
        };
        let mut values = HashMap::new();
        for o in &spec.options {
            let over = settings.overrides.get(&(node.to_string(), o.name.to_string()));
            let value = match (over, written.iter().find(|(n, _)| n == o.name)) {
                (Some(text), _) => Some(parse(text, &o.ty).map_err(|m| invalid(o.name, m))?),
                (None, Some((_, v))) => Some(resolve_env(v, &o.ty, settings).map_err(|m| invalid(o.name, m))?),
                (None, None) => None,
            };
            let value = match value {
                Some(v) => v,
                None => match o.default {
                    Some(d) => parse(d, &o.ty).map_err(|m| invalid(o.name, m))?,
                    None if o.required => {
                        return Err(OptionError::Missing { node: node.to_string(), option: o.name.to_string() });
                    }
                    None => continue,
                },
            };
            values.insert(o.name.to_string(), value);
        }
        for (n, opt) in settings.overrides.keys() {
            if n == node && spec.option(opt).is_none() {
                return Err(invalid(opt, format!("`{}` has no such option", spec.name)));
            }
        }
        Ok(Options { node: node.to_string(), values })
    }

    /// Only the declared defaults (required options left unset): for a connector replaced in
    /// tests, which still needs `batch_size` and the like.
    pub fn defaults(node: &str, spec: &ConnectorSpec) -> Options {
        let values =
            spec.options.iter().filter_map(|o| Some((o.name.to_string(), parse(o.default?, &o.ty).ok()?))).collect();
        Options { node: node.to_string(), values }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn get(&self, name: &str) -> Option<&OptionValue> {
        self.values.get(name)
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        match self.values.get(name)? {
            OptionValue::String(s) | OptionValue::Expr(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.values.get(name)? {
            OptionValue::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.values.get(name)? {
            OptionValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn duration(&self, name: &str) -> Option<Duration> {
        match self.values.get(name)? {
            OptionValue::Duration(ns) => Some(Duration::from_nanos((*ns).max(0) as u64)),
            _ => None,
        }
    }

    pub fn size(&self, name: &str) -> Option<u64> {
        match self.values.get(name)? {
            OptionValue::Size(b) => Some(*b),
            _ => None,
        }
    }

    pub fn strings(&self, name: &str) -> Vec<String> {
        match self.values.get(name) {
            Some(OptionValue::List(items)) => items
                .iter()
                .filter_map(|v| match v {
                    OptionValue::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            Some(OptionValue::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }

    /// A positive count option, or an error naming it.
    pub fn positive(&self, name: &str) -> Result<usize, OptionError> {
        match self.int(name) {
            Some(n) if n > 0 => Ok(n as usize),
            other => Err(OptionError::Invalid {
                node: self.node.clone(),
                option: name.into(),
                message: format!(
                    "must be a positive number, got {}",
                    other.map_or("nothing".into(), |n| n.to_string())
                ),
            }),
        }
    }
}

fn resolve_env(v: &OptionValue, ty: &OptionType, settings: &Settings) -> Result<OptionValue, String> {
    Ok(match v {
        OptionValue::Env { name, default } => match (settings.env(name), default) {
            (Some(text), _) => parse(&text, ty).map_err(|m| format!("from env `{name}`: {m}"))?,
            (None, Some(d)) => resolve_env(d, ty, settings)?,
            (None, None) => return Err(format!("environment variable `{name}` is not set and has no default")),
        },
        OptionValue::Secret(inner) => resolve_env(inner, ty, settings)?,
        OptionValue::List(items) => {
            let item_ty = match ty {
                OptionType::List(t) => t.as_ref(),
                t => t,
            };
            OptionValue::List(items.iter().map(|i| resolve_env(i, item_ty, settings)).collect::<Result<_, _>>()?)
        }
        other => other.clone(),
    })
}

/// Parse option text (a default, an env value, a `--set` value) as `ty`.
pub fn parse(text: &str, ty: &OptionType) -> Result<OptionValue, String> {
    let t = text.trim();
    Ok(match ty {
        OptionType::String | OptionType::Expr(_) => OptionValue::String(text.to_string()),
        OptionType::Int => {
            OptionValue::Int(t.replace('_', "").parse().map_err(|_| format!("`{t}` is not an integer"))?)
        }
        OptionType::Float => OptionValue::Float(t.parse().map_err(|_| format!("`{t}` is not a number"))?),
        OptionType::Bool => OptionValue::Bool(match t {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(format!("`{t}` is not a bool (true or false)")),
        }),
        OptionType::Duration => OptionValue::Duration(parse_duration(t)?),
        OptionType::Size => OptionValue::Size(parse_size(t)?),
        OptionType::Enum(words) => {
            if !words.contains(&t) {
                return Err(format!("`{t}` is not one of {}", words.join(", ")));
            }
            OptionValue::String(t.to_string())
        }
        OptionType::List(inner) => OptionValue::List(t.split(',').map(|p| parse(p, inner)).collect::<Result<_, _>>()?),
    })
}

fn split_unit(t: &str) -> (&str, &str) {
    let end = t.find(|c: char| !c.is_ascii_digit() && c != '_').unwrap_or(t.len());
    (&t[..end], t[end..].trim())
}

pub fn parse_duration(t: &str) -> Result<i64, String> {
    let bad = || format!("`{t}` is not a duration (like 250ms, 5s)");
    let (digits, unit) = split_unit(t);
    let n: u64 = digits.replace('_', "").parse().map_err(|_| bad())?;
    // A bare 0 needs no unit.
    let scale = if unit.is_empty() && n == 0 { 1 } else { duration_unit_ns(unit).ok_or_else(bad)? };
    n.checked_mul(scale).and_then(|ns| i64::try_from(ns).ok()).ok_or_else(|| format!("duration `{t}` is too long"))
}

pub fn parse_size(t: &str) -> Result<u64, String> {
    let bad = || format!("`{t}` is not a size (like 512KiB, 10MiB)");
    let (digits, unit) = split_unit(t);
    let n: u64 = digits.replace('_', "").parse().map_err(|_| bad())?;
    let scale = if unit.is_empty() { 1 } else { size_unit_bytes(unit).ok_or_else(bad)? };
    n.checked_mul(scale).ok_or_else(|| format!("size `{t}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("5ms"), Ok(5_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn set_splits_nodes_from_env() {
        let s = Settings::parse(&["orders.path=/tmp/x".into(), "TOPIC=a=b".into()]).unwrap();
        assert_eq!(s.overrides[&("orders".into(), "path".into())], "/tmp/x");
        assert_eq!(s.env["TOPIC"], "a=b");
        assert!(Settings::parse(&["nothing".into()]).is_err());
    }
}
