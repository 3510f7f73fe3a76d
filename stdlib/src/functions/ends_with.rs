//! `ends_with`: True when the string ends with the suffix.

use crate::prelude::*;

#[derive(Debug)]
pub struct EndsWith;

impl Function for EndsWith {
    fn name(&self) -> &'static str {
        "ends_with"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![param("value", ParamType::Exact(Ty::String)), param("suffix", ParamType::Exact(Ty::String))],
            Returns::Exact(Ty::Bool),
        )
    }

    fn summary(&self) -> &'static str {
        "True when the string ends with the suffix."
    }

    fn examples(&self) -> &'static [Example] {
        &[Example { expr: "ends_with('flow.phx', '.phx')", result: "true" }]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::string::ends_with()
    }
}
