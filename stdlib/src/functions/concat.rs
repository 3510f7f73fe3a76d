//! `concat`: Joins strings; NULL arguments count as empty (unlike `||`, which gives NULL).

use crate::prelude::*;

#[derive(Debug)]
pub struct Concat;

impl Function for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }

    fn signature(&self) -> Signature {
        Signature::new(vec![param("value", ParamType::Exact(Ty::String))], Returns::Exact(Ty::String)).variadic()
    }

    fn summary(&self) -> &'static str {
        "Joins strings; NULL arguments count as empty (unlike `||`, which gives NULL)."
    }

    fn examples(&self) -> &'static [Example] {
        &[
            Example { expr: "concat('a', 'b', 'c')", result: "\"abc\"" },
            Example { expr: "concat('a', null)", result: "\"a\"" },
        ]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::string::concat()
    }
}
