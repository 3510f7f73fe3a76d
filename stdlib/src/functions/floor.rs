//! `floor`: Rounds down to a whole number.

use crate::prelude::*;

#[derive(Debug)]
pub struct Floor;

impl Function for Floor {
    fn name(&self) -> &'static str {
        "floor"
    }

    fn signature(&self) -> Signature {
        Signature::new(vec![param("value", ParamType::Exact(Ty::Float))], Returns::Exact(Ty::Float))
    }

    fn summary(&self) -> &'static str {
        "Rounds down to a whole number."
    }

    fn examples(&self) -> &'static [Example] {
        &[Example { expr: "floor(2.7)", result: "2.0" }, Example { expr: "floor(-2.1)", result: "-3.0" }]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::math::floor()
    }
}
