//! `upper`: Uppercases a string (Unicode-aware).

use crate::prelude::*;

#[derive(Debug)]
pub struct Upper;

impl Function for Upper {
    fn name(&self) -> &'static str {
        "upper"
    }

    fn signature(&self) -> Signature {
        Signature::new(vec![param("value", ParamType::Exact(Ty::String))], Returns::Exact(Ty::String))
    }

    fn summary(&self) -> &'static str {
        "Uppercases a string (Unicode-aware)."
    }

    fn examples(&self) -> &'static [Example] {
        &[Example { expr: "upper('de')", result: "\"DE\"" }]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::string::upper()
    }
}
