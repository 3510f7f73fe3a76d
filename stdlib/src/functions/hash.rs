//! `hash`: A stable 64-bit hash of a value, for routing and sampling.

use crate::prelude::*;
use arrow::array::{ArrayRef, AsArray, Int64Array};
use arrow::compute::cast_with_options;
use arrow::datatypes::DataType;
use datafusion_common::format::DEFAULT_CAST_OPTIONS;
use datafusion_common::{Result, ScalarValue, exec_err};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature as UdfSignature, Volatility};
use twox_hash::XxHash64;

#[derive(Debug)]
pub struct Hash;

impl Function for Hash {
    fn name(&self) -> &'static str {
        "hash"
    }

    fn signature(&self) -> Signature {
        Signature::new(vec![param("value", ParamType::Scalar)], Returns::Exact(Ty::Int))
    }

    fn summary(&self) -> &'static str {
        "A stable 64-bit hash (XXH64, seed 0) of the value's text form (as `'' || value` writes it), \
         the same on every run and machine; may be negative. For routing and sampling: \
         `hash(user_id) % 10 = 0`."
    }

    fn examples(&self) -> &'static [Example] {
        &[
            Example { expr: "hash('phoenix')", result: "1073191057404091082" },
            Example { expr: "hash(42) = hash('42')", result: "true" },
            Example { expr: "hash('user-7') % 4 in (-3, -2, -1, 0, 1, 2, 3)", result: "true" },
        ]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::from(HashUdf::new()))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct HashUdf {
    signature: UdfSignature,
}

impl HashUdf {
    fn new() -> HashUdf {
        HashUdf { signature: UdfSignature::any(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for HashUdf {
    fn name(&self) -> &str {
        "hash"
    }

    fn signature(&self) -> &UdfSignature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("hash takes 1 argument, got {}", args.args.len());
        };
        let scalar = matches!(value, ColumnarValue::Scalar(_));
        let values = value.to_array(if scalar { 1 } else { args.number_rows })?;
        // The same text as a cast to string (`||`), so `hash(42) = hash('42')`.
        let text = cast_with_options(&values, &DataType::Utf8, &DEFAULT_CAST_OPTIONS)?;
        let out: Int64Array = text.as_string::<i32>().iter().map(|s| s.map(hash)).collect();
        let out: ArrayRef = Arc::new(out);
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// XXH64 with seed 0, its bits read as a signed int.
fn hash(text: &str) -> i64 {
    XxHash64::oneshot(0, text.as_bytes()) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable() {
        // Published XXH64 test vectors: these must never change.
        assert_eq!(hash("") as u64, 0xEF46_DB37_51D8_E999);
        assert_eq!(hash("a") as u64, 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(hash("abc") as u64, 0x44BC_2CF5_AD77_0999);
    }

    #[test]
    fn text_form() {
        let udf = HashUdf::new();
        let run = |v: ColumnarValue| {
            let args = ScalarFunctionArgs {
                args: vec![v],
                arg_fields: vec![],
                number_rows: 2,
                return_field: Arc::new(arrow::datatypes::Field::new("r", DataType::Int64, true)),
                config_options: Default::default(),
            };
            let a = udf.invoke_with_args(args).unwrap().into_array(2).unwrap();
            a.as_primitive::<arrow::datatypes::Int64Type>().iter().collect::<Vec<_>>()
        };
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(42), None]));
        assert_eq!(run(ColumnarValue::Array(ints)), vec![Some(hash("42")), None]);
        assert_eq!(run(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true)))), vec![Some(hash("true")); 2]);
        assert_eq!(run(ColumnarValue::Scalar(ScalarValue::Null)), vec![None, None]);
    }
}
