//! `coalesce`: The first argument that is not NULL.

use crate::prelude::*;

#[derive(Debug)]
pub struct Coalesce;

impl Function for Coalesce {
    fn name(&self) -> &'static str {
        "coalesce"
    }

    fn signature(&self) -> Signature {
        Signature::new(vec![param("value", ParamType::Same)], Returns::Unified).variadic()
    }

    fn summary(&self) -> &'static str {
        "The first argument that is not NULL."
    }

    fn examples(&self) -> &'static [Example] {
        &[
            Example { expr: "coalesce(null, 'b', 'c')", result: "\"b\"" },
            Example { expr: "coalesce(null, 2)", result: "2" },
        ]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::core::coalesce()
    }
}
