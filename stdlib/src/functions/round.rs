//! `round`: Rounds to the nearest value with `digits` decimals (default 0), halves away from zero.

use crate::prelude::*;

#[derive(Debug)]
pub struct Round;

impl Function for Round {
    fn name(&self) -> &'static str {
        "round"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![param("value", ParamType::Exact(Ty::Float)), param("digits", ParamType::Exact(Ty::Int))],
            Returns::Exact(Ty::Float),
        )
        .optional_from(1)
    }

    fn summary(&self) -> &'static str {
        "Rounds to the nearest value with `digits` decimals (default 0), halves away from zero."
    }

    fn examples(&self) -> &'static [Example] {
        &[Example { expr: "round(2.5)", result: "3.0" }, Example { expr: "round(3.14159, 2)", result: "3.14" }]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::math::round()
    }
}
