//! `substr`: The part of a string from a 1-based character position, optionally of a given length.

use crate::prelude::*;

#[derive(Debug)]
pub struct Substr;

impl Function for Substr {
    fn name(&self) -> &'static str {
        "substr"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![
                param("value", ParamType::Exact(Ty::String)),
                param("start", ParamType::Exact(Ty::Int)),
                param("length", ParamType::Exact(Ty::Int)),
            ],
            Returns::Exact(Ty::String),
        )
        .optional_from(2)
    }

    fn summary(&self) -> &'static str {
        "The part of a string from a 1-based character position, optionally of a given length."
    }

    fn examples(&self) -> &'static [Example] {
        &[
            Example { expr: "substr('phoenix', 2)", result: "\"hoenix\"" },
            Example { expr: "substr('phoenix', 1, 3)", result: "\"pho\"" },
        ]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::unicode::substr()
    }
}
