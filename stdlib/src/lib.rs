//! Phoenix's standard library: the built-in functions of the `.phx` language.
//!
//! One function per file under `functions/`, each a [`Function`] with its signature, summary,
//! runnable examples and DataFusion implementation. [`Stdlib`] looks them up by name.

mod functions;

use datafusion_expr::ScalarUDF;
use phoenix_dsl::catalog::Function;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What every function file needs.
pub(crate) mod prelude {
    pub use datafusion_expr::ScalarUDF;
    pub use phoenix_dsl::catalog::{Example, Function, ParamType, Returns, Signature, param};
    pub use phoenix_dsl::types::Ty;
    pub use std::sync::Arc;
}

/// The built-in functions, by name.
#[derive(Debug)]
pub struct Stdlib {
    functions: BTreeMap<&'static str, Box<dyn Function>>,
}

impl Default for Stdlib {
    fn default() -> Self {
        Stdlib::new()
    }
}

impl Stdlib {
    pub fn new() -> Stdlib {
        Stdlib { functions: functions::all().into_iter().map(|f| (f.name(), f)).collect() }
    }

    pub fn get(&self, name: &str) -> Option<&dyn Function> {
        self.functions.get(name).map(|f| f.as_ref())
    }

    /// All functions, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Function> {
        self.functions.values().map(|f| f.as_ref())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.functions.keys().copied().collect()
    }

    /// Reads a field of a record (`customer.tier`); not callable by name from flows.
    pub fn get_field(&self) -> Arc<ScalarUDF> {
        datafusion_functions::core::get_field()
    }
}
