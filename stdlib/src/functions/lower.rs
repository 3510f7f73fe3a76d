//! `lower`: Lowercases a string (Unicode-aware).

use crate::prelude::*;

#[derive(Debug)]
pub struct Lower;

impl Function for Lower {
    fn name(&self) -> &'static str {
        "lower"
    }

    fn signature(&self) -> Signature {
        Signature::new(vec![param("value", ParamType::Exact(Ty::String))], Returns::Exact(Ty::String))
    }

    fn summary(&self) -> &'static str {
        "Lowercases a string (Unicode-aware)."
    }

    fn examples(&self) -> &'static [Example] {
        &[Example { expr: "lower('ÄBC')", result: "\"äbc\"" }, Example { expr: "lower(null)", result: "null" }]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::string::lower()
    }
}
