//! `round`: Rounds to the nearest value with `digits` decimals (default 0), halves away from zero.

use crate::prelude::*;
use arrow::array::{ArrayRef, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion_common::{Result, ScalarValue, exec_err};
use datafusion_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature as UdfSignature, TypeSignature, Volatility,
};

#[derive(Debug)]
pub struct Round;

impl Function for Round {
    fn name(&self) -> &'static str {
        "round"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![param("value", ParamType::Exact(Ty::Float)), param("digits", ParamType::Exact(Ty::Int))],
            Returns::Exact(Ty::Float),
        )
        .optional_from(1)
    }

    fn summary(&self) -> &'static str {
        "Rounds to the nearest value with `digits` decimals (default 0), halves away from zero."
    }

    fn examples(&self) -> &'static [Example] {
        &[
            Example { expr: "round(2.5)", result: "3.0" },
            Example { expr: "round(3.14159, 2)", result: "3.14" },
            Example { expr: "round(1250, -2)", result: "1300.0" },
        ]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::from(RoundUdf::new()))
    }
}

/// DataFusion's `round` wants `Int32` digits (its planner would cast them; the engine has no
/// coercion pass) and gives NaN for very large `digits`, so this one is ours.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RoundUdf {
    signature: UdfSignature,
}

impl RoundUdf {
    fn new() -> RoundUdf {
        RoundUdf {
            signature: UdfSignature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Float64]),
                    TypeSignature::Exact(vec![DataType::Float64, DataType::Int64]),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for RoundUdf {
    fn name(&self) -> &str {
        "round"
    }

    fn signature(&self) -> &UdfSignature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (value, digits) = match args.args.as_slice() {
            [value] => (value, None),
            [value, digits] => (value, Some(digits)),
            other => return exec_err!("round takes 1 or 2 arguments, got {}", other.len()),
        };
        let scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let values = cast(&value.to_array(rows)?, &DataType::Float64)?;
        let values = values.as_primitive::<Float64Type>();
        let out: Float64Array = match digits {
            None => values.unary(f64::round),
            Some(ColumnarValue::Scalar(d)) => match d.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(d)) => values.unary(|v| round(v, d)),
                _ => Float64Array::new_null(values.len()),
            },
            Some(ColumnarValue::Array(d)) => {
                let digits = cast(d, &DataType::Int64)?;
                let digits = digits.as_primitive::<Int64Type>();
                values.iter().zip(digits.iter()).map(|(v, d)| Some(round(v?, d?))).collect()
            }
        };
        let out: ArrayRef = Arc::new(out);
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// `value` rounded half away from zero to `digits` decimals (tens, hundreds… when negative).
fn round(value: f64, digits: i64) -> f64 {
    // 10^±330 is past every f64's precision either way.
    let digits = digits.clamp(-330, 330) as i32;
    if digits >= 0 {
        let factor = 10f64.powi(digits);
        let scaled = value * factor;
        // Beyond 2^53 the scaled value has no fraction left to round.
        if !scaled.is_finite() || scaled.abs() >= 9_007_199_254_740_992.0 { value } else { scaled.round() / factor }
    } else {
        let factor = 10f64.powi(-digits);
        if factor.is_infinite() { 0.0 } else { (value / factor).round() * factor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds() {
        assert_eq!(round(2.5, 0), 3.0);
        assert_eq!(round(-2.5, 0), -3.0);
        assert_eq!(round(1.23456, 2), 1.23);
        assert_eq!(round(1250.0, -2), 1300.0);
        assert_eq!(round(1.5, 400), 1.5);
        assert_eq!(round(1e300, 100), 1e300);
        assert_eq!(round(1e300, -400), 0.0);
        assert_eq!(round(123.0, -400), 0.0);
        assert!(round(f64::NAN, 2).is_nan());
        assert_eq!(round(f64::INFINITY, -2), f64::INFINITY);
    }
}
