//! `length`: Number of characters (not bytes) in a string.

use crate::prelude::*;

#[derive(Debug)]
pub struct Length;

impl Function for Length {
    fn name(&self) -> &'static str {
        "length"
    }

    fn signature(&self) -> Signature {
        Signature::new(vec![param("value", ParamType::Exact(Ty::String))], Returns::Exact(Ty::Int))
    }

    fn summary(&self) -> &'static str {
        "Number of characters (not bytes) in a string."
    }

    fn examples(&self) -> &'static [Example] {
        &[Example { expr: "length('héllo')", result: "5" }]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::unicode::character_length()
    }
}
