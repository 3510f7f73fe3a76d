//! `replace`: Replaces every occurrence of a substring.

use crate::prelude::*;

#[derive(Debug)]
pub struct Replace;

impl Function for Replace {
    fn name(&self) -> &'static str {
        "replace"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![
                param("value", ParamType::Exact(Ty::String)),
                param("from", ParamType::Exact(Ty::String)),
                param("to", ParamType::Exact(Ty::String)),
            ],
            Returns::Exact(Ty::String),
        )
    }

    fn summary(&self) -> &'static str {
        "Replaces every occurrence of a substring."
    }

    fn examples(&self) -> &'static [Example] {
        &[Example { expr: "replace('a-b-c', '-', '/')", result: "\"a/b/c\"" }]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::string::replace()
    }
}
