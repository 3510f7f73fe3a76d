//! `ceil`: Rounds up to a whole number.

use crate::prelude::*;

#[derive(Debug)]
pub struct Ceil;

impl Function for Ceil {
    fn name(&self) -> &'static str {
        "ceil"
    }

    fn signature(&self) -> Signature {
        Signature::new(vec![param("value", ParamType::Exact(Ty::Float))], Returns::Exact(Ty::Float))
    }

    fn summary(&self) -> &'static str {
        "Rounds up to a whole number."
    }

    fn examples(&self) -> &'static [Example] {
        &[Example { expr: "ceil(2.1)", result: "3.0" }]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::math::ceil()
    }
}
