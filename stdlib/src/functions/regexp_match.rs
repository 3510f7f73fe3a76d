//! `regexp_match`: True when the string matches the regular expression (Rust `regex` syntax) anywhere.

use crate::prelude::*;

#[derive(Debug)]
pub struct RegexpMatch;

impl Function for RegexpMatch {
    fn name(&self) -> &'static str {
        "regexp_match"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![param("value", ParamType::Exact(Ty::String)), param("pattern", ParamType::Exact(Ty::String))],
            Returns::Exact(Ty::Bool),
        )
    }

    fn summary(&self) -> &'static str {
        "True when the string matches the regular expression (Rust `regex` syntax) anywhere."
    }

    fn examples(&self) -> &'static [Example] {
        &[
            Example { expr: "regexp_match('order-42', '^order-[0-9]+$')", result: "true" },
            Example { expr: "regexp_match('x', '[0-9]')", result: "false" },
        ]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::regex::regexp_like()
    }
}
