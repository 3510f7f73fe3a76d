//! `now`: The current wall-clock time.

use crate::prelude::*;
use arrow::datatypes::{DataType, TimeUnit};
use datafusion_common::{Result, ScalarValue, exec_err};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature as UdfSignature, Volatility};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct Now;

impl Function for Now {
    fn name(&self) -> &'static str {
        "now"
    }

    fn signature(&self) -> Signature {
        Signature::new(Vec::new(), Returns::Exact(Ty::Timestamp))
    }

    fn summary(&self) -> &'static str {
        "The current wall-clock time (UTC), read once per batch of events."
    }

    fn examples(&self) -> &'static [Example] {
        &[
            Example { expr: "now() > to_timestamp('2020-01-01T00:00:00Z')", result: "true" },
            Example { expr: "now() - now() < 1s", result: "true" },
        ]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::from(NowUdf::new()))
    }
}

/// Unlike DataFusion's `now()`, which the planner replaces by the query's start time, this one
/// reads the clock each time a batch is evaluated: flows run for days.
#[derive(Debug, PartialEq, Eq, Hash)]
struct NowUdf {
    signature: UdfSignature,
}

impl NowUdf {
    fn new() -> NowUdf {
        NowUdf { signature: UdfSignature::nullary(Volatility::Volatile) }
    }
}

impl ScalarUDFImpl for NowUdf {
    fn name(&self) -> &str {
        "now"
    }

    fn signature(&self) -> &UdfSignature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args.args.is_empty() {
            return exec_err!("now takes no arguments, got {}", args.args.len());
        }
        // Before 1970 or after 2262 the clock is wrong, and the nanoseconds do not fit: NULL.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).ok().and_then(|d| i64::try_from(d.as_nanos()).ok());
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(nanos, Some("UTC".into()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_clock() {
        let args = ScalarFunctionArgs {
            args: vec![],
            arg_fields: vec![],
            number_rows: 3,
            return_field: Arc::new(arrow::datatypes::Field::new("r", NowUdf::new().return_type(&[]).unwrap(), false)),
            config_options: Default::default(),
        };
        let Ok(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(Some(n), Some(tz)))) =
            NowUdf::new().invoke_with_args(args)
        else {
            panic!("a UTC timestamp")
        };
        assert_eq!(&*tz, "UTC");
        assert!(n > 1_700_000_000_000_000_000);
    }
}
