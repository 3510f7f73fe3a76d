//! `trim`: Removes leading and trailing spaces.

use crate::prelude::*;

#[derive(Debug)]
pub struct Trim;

impl Function for Trim {
    fn name(&self) -> &'static str {
        "trim"
    }

    fn signature(&self) -> Signature {
        Signature::new(vec![param("value", ParamType::Exact(Ty::String))], Returns::Exact(Ty::String))
    }

    fn summary(&self) -> &'static str {
        "Removes leading and trailing spaces."
    }

    fn examples(&self) -> &'static [Example] {
        &[Example { expr: "trim('  a b  ')", result: "\"a b\"" }]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        datafusion_functions::string::btrim()
    }
}
