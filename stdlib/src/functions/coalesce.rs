//! `coalesce`: The first argument that is not NULL.

use crate::prelude::*;
use arrow::array::{Array, ArrayRef};
use arrow::compute::kernels::zip::zip;
use arrow::compute::{cast, is_not_null};
use arrow::datatypes::DataType;
use datafusion_common::{Result, ScalarValue, exec_err};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature as UdfSignature, Volatility};

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
        Arc::new(ScalarUDF::from(CoalesceUdf::new()))
    }
}

/// DataFusion's `coalesce` only runs after its planner rewrote it to `case`, which the engine
/// does not do (its `invoke` is an error), so this one evaluates it directly.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CoalesceUdf {
    signature: UdfSignature,
}

impl CoalesceUdf {
    fn new() -> CoalesceUdf {
        CoalesceUdf { signature: UdfSignature::variadic_any(Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for CoalesceUdf {
    fn name(&self) -> &str {
        "coalesce"
    }

    fn signature(&self) -> &UdfSignature {
        &self.signature
    }

    /// The checker gives all arguments one type; NULL literals may still be untyped.
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args.iter().find(|t| !t.is_null()).cloned().unwrap_or(DataType::Null))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ty = args.return_type().clone();
        if args.args.is_empty() {
            return exec_err!("coalesce needs at least one argument");
        }
        if args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            let first = args.args.iter().find_map(|a| match a {
                ColumnarValue::Scalar(s) if !s.is_null() => Some(s.clone()),
                _ => None,
            });
            return Ok(ColumnarValue::Scalar(first.unwrap_or(ScalarValue::Null).cast_to(&ty)?));
        }
        let mut values: Option<ArrayRef> = None;
        for arg in &args.args {
            let next = cast(&arg.to_array(args.number_rows)?, &ty)?;
            values = Some(match values {
                None => next,
                Some(v) if v.null_count() == 0 => return Ok(ColumnarValue::Array(v)),
                Some(v) => zip(&is_not_null(&v)?, &v, &next)?,
            });
        }
        Ok(ColumnarValue::Array(values.expect("at least one argument")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{Field, Int64Type};

    fn run(args: Vec<ColumnarValue>, rows: usize) -> ColumnarValue {
        let udf = CoalesceUdf::new();
        let types: Vec<DataType> = args.iter().map(|a| a.data_type()).collect();
        let args = ScalarFunctionArgs {
            args,
            arg_fields: vec![],
            number_rows: rows,
            return_field: Arc::new(Field::new("r", udf.return_type(&types).unwrap(), true)),
            config_options: Default::default(),
        };
        udf.invoke_with_args(args).unwrap()
    }

    #[test]
    fn first_not_null() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, None]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![Some(10), Some(20), None]));
        let out = run(
            vec![ColumnarValue::Array(a), ColumnarValue::Array(b), ColumnarValue::Scalar(ScalarValue::Int64(Some(0)))],
            3,
        );
        let out = out.into_array(3).unwrap();
        assert_eq!(out.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), vec![Some(1), Some(20), Some(0)]);
        let out =
            run(vec![ColumnarValue::Scalar(ScalarValue::Null), ColumnarValue::Scalar(ScalarValue::Int64(Some(2)))], 1);
        assert!(matches!(out, ColumnarValue::Scalar(ScalarValue::Int64(Some(2)))));
        let out = run(vec![ColumnarValue::Scalar(ScalarValue::Null), ColumnarValue::Scalar(ScalarValue::Null)], 1);
        assert!(matches!(out, ColumnarValue::Scalar(ScalarValue::Null)));
    }
}
