//! What the checker needs to know about the world outside the language: which connectors exist
//! with which options, and which functions with which signatures.
//!
//! The `dsl` crate defines the shapes; `stdlib` supplies the functions and `engine` the
//! connectors, each through one explicit list. The checker only sees a [`Catalog`].

use crate::types::{Record, RecordField, Ty};
use datafusion_expr::ScalarUDF;
use std::fmt;
use std::sync::Arc;

/// Whether a connector reads events in or writes them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Source,
    Sink,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Sink => "sink",
        })
    }
}

/// The declared options and metadata of one connector in one role.
#[derive(Debug, Clone)]
pub struct ConnectorSpec {
    pub name: &'static str,
    pub role: Role,
    pub summary: &'static str,
    pub options: Vec<OptionSpec>,
    /// `@name` metadata a source attaches to each event.
    pub metadata: Vec<MetaSpec>,
}

impl ConnectorSpec {
    pub fn option(&self, name: &str) -> Option<&OptionSpec> {
        self.options.iter().find(|o| o.name == name)
    }

    /// The metadata as a record type (for type checking `@name`).
    pub fn metadata_record(&self) -> Record {
        Record {
            fields: self
                .metadata
                .iter()
                .map(|m| RecordField { name: m.name.into(), ty: m.ty.clone(), optional: m.optional })
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetaSpec {
    pub name: &'static str,
    pub ty: Ty,
    pub optional: bool,
    pub doc: &'static str,
}

/// One option of a connector (or of the `deploy` block).
#[derive(Debug, Clone)]
pub struct OptionSpec {
    pub name: &'static str,
    pub ty: OptionType,
    pub required: bool,
    /// The default as documentation text (`"1000"`), when not required.
    pub default: Option<&'static str>,
    pub doc: &'static str,
    /// Never printed (passwords, keys). Values should come from `env()`.
    pub secret: bool,
}

impl OptionSpec {
    pub fn new(name: &'static str, ty: OptionType, doc: &'static str) -> OptionSpec {
        OptionSpec { name, ty, required: false, default: None, doc, secret: false }
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn default(mut self, default: &'static str) -> Self {
        self.default = Some(default);
        self
    }

    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
}

/// The type of an option's value.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionType {
    String,
    Int,
    Float,
    Bool,
    /// `250ms`, `5s`
    Duration,
    /// `10MiB` or a plain byte count.
    Size,
    /// One of the listed words.
    Enum(&'static [&'static str]),
    /// A list of values (a single value is accepted as a one-element list).
    List(Box<OptionType>),
    /// An expression evaluated on each event, of the given type (`key = customer.id`).
    Expr(Ty),
}

impl fmt::Display for OptionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionType::String => f.write_str("string"),
            OptionType::Int => f.write_str("int"),
            OptionType::Float => f.write_str("float"),
            OptionType::Bool => f.write_str("bool"),
            OptionType::Duration => f.write_str("duration"),
            OptionType::Size => f.write_str("size"),
            OptionType::Enum(words) => {
                let quoted: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
                write!(f, "one of {}", quoted.join(", "))
            }
            OptionType::List(t) => write!(f, "list of {t}"),
            OptionType::Expr(t) => write!(f, "{t} expression over the event"),
        }
    }
}

/// A built-in function as the checker sees it: its signature, docs and examples, and the
/// DataFusion implementation the engine runs.
pub trait Function: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    fn signature(&self) -> Signature;
    fn summary(&self) -> &'static str;
    /// Runnable examples: each expression, evaluated on an empty event, gives `result`.
    fn examples(&self) -> &'static [Example];
    /// The DataFusion implementation.
    fn udf(&self) -> Arc<ScalarUDF>;
    /// Metadata of the event passed as a hidden first argument: `payload_size()` reads `@size`,
    /// so the UDF sees that column without the user writing it.
    fn implicit_metadata(&self) -> Option<&'static str> {
        None
    }
    /// The result may be NULL even when no argument is (`json_get` of a missing key).
    fn may_return_null(&self) -> bool {
        false
    }
}

/// `expr` evaluates to `result` (a JSON value) when run on the event `input`.
#[derive(Debug, Clone, Copy)]
pub struct Example {
    pub expr: &'static str,
    pub result: &'static str,
}

/// What arguments a function takes and what it returns.
#[derive(Debug, Clone)]
pub struct Signature {
    pub params: Vec<Param>,
    /// How many of `params` must be given (the rest are optional).
    pub required: usize,
    /// The last parameter repeats.
    pub variadic: bool,
    pub returns: Returns,
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: &'static str,
    pub ty: ParamType,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ParamType {
    Exact(Ty),
    /// int or float
    Numeric,
    /// string, int, float, bool, timestamp or duration
    Scalar,
    /// Any type; all `Same` params must unify.
    Same,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Returns {
    Exact(Ty),
    /// The unified type of the `Same`/`Numeric` arguments.
    Unified,
}

impl Signature {
    pub fn new(params: Vec<Param>, returns: Returns) -> Signature {
        let required = params.len();
        Signature { params, required, variadic: false, returns }
    }

    pub fn optional_from(mut self, required: usize) -> Self {
        self.required = required;
        self
    }

    pub fn variadic(mut self) -> Self {
        self.variadic = true;
        self
    }

    /// `concat(value: string, ...) -> string`
    pub fn display(&self, name: &str) -> String {
        let mut parts: Vec<String> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let t = match &p.ty {
                    ParamType::Exact(t) => t.to_string(),
                    ParamType::Numeric => "int|float".into(),
                    ParamType::Scalar => "any scalar".into(),
                    ParamType::Same => "T".into(),
                };
                if i >= self.required { format!("[{}: {t}]", p.name) } else { format!("{}: {t}", p.name) }
            })
            .collect();
        if self.variadic {
            parts.push("...".into());
        }
        let ret = match &self.returns {
            Returns::Exact(t) => t.to_string(),
            Returns::Unified => "T".into(),
        };
        format!("{name}({}) -> {ret}", parts.join(", "))
    }
}

pub fn param(name: &'static str, ty: ParamType) -> Param {
    Param { name, ty }
}

/// Everything the checker looks up by name.
pub trait Catalog {
    fn connector(&self, name: &str, role: Role) -> Option<&ConnectorSpec>;
    fn connectors(&self) -> Vec<&ConnectorSpec>;
    fn function(&self, name: &str) -> Option<&dyn Function>;
    fn function_names(&self) -> Vec<&'static str>;
    /// Options of the `deploy { }` block.
    fn deploy_options(&self) -> &[OptionSpec];
    /// The UDF used to read a field of a record (`a.b`), DataFusion's `get_field`.
    fn get_field(&self) -> Arc<ScalarUDF>;
}
