//! `starts_with`: True when the string starts with the prefix.

use crate::prelude::*;

#[derive(Debug)]
pub struct StartsWith;

impl Function for StartsWith {
    fn name(&self) -> &'static str {
        "starts_with"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![param("value", ParamType::Exact(Ty::String)), param("prefix", ParamType::Exact(Ty::String))],
            Returns::Exact(Ty::Bool),
        )
    }

    fn summary(&self) -> &'static str {
        "True when the string starts with the prefix."
    }

    fn examples(&self) -> &'static [Example] {
        &[Example { expr: "starts_with('phoenix', 'pho')", result: "true" }]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::string::starts_with()
    }
}
