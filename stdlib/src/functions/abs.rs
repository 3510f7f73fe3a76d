//! `abs`: Absolute value.

use crate::prelude::*;

#[derive(Debug)]
pub struct Abs;

impl Function for Abs {
    fn name(&self) -> &'static str {
        "abs"
    }

    fn signature(&self) -> Signature {
        Signature::new(vec![param("value", ParamType::Numeric)], Returns::Unified)
    }

    fn summary(&self) -> &'static str {
        "Absolute value."
    }

    fn examples(&self) -> &'static [Example] {
        &[Example { expr: "abs(-4)", result: "4" }, Example { expr: "abs(-1.5)", result: "1.5" }]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::math::abs()
    }
}
