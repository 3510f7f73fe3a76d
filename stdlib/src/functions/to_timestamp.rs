//! `to_timestamp`: Reads a timestamp from a string, RFC 3339 or in a `strftime` format.

use crate::prelude::*;
use arrow::array::{Array, ArrayRef, AsArray, TimestampNanosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use chrono::format::{Item, Parsed, StrftimeItems, parse};
use chrono::{DateTime, NaiveTime};
use datafusion_common::{Result, ScalarValue, exec_err};
use datafusion_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature as UdfSignature, TypeSignature, Volatility,
};

#[derive(Debug)]
pub struct ToTimestamp;

impl Function for ToTimestamp {
    fn name(&self) -> &'static str {
        "to_timestamp"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![param("value", ParamType::Exact(Ty::String)), param("format", ParamType::Exact(Ty::String))],
            Returns::Exact(Ty::Timestamp),
        )
        .optional_from(1)
    }

    fn summary(&self) -> &'static str {
        "Reads a timestamp: RFC 3339 by default, else in the `strftime` `format` (`'%d/%m/%Y %H:%M'`; \
         without an offset the time is UTC, without a time it is midnight); NULL when it does not parse."
    }

    fn examples(&self) -> &'static [Example] {
        &[
            Example { expr: "to_timestamp('2024-05-01T14:30:00+02:00')", result: r#""2024-05-01T12:30:00Z""# },
            Example { expr: "to_timestamp('01/05/2024 08:15', '%d/%m/%Y %H:%M')", result: r#""2024-05-01T08:15:00Z""# },
            Example { expr: "to_timestamp('yesterday')", result: "null" },
        ]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::from(ToTimestampUdf::new()))
    }

    fn may_return_null(&self) -> bool {
        true
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToTimestampUdf {
    signature: UdfSignature,
}

impl ToTimestampUdf {
    fn new() -> ToTimestampUdf {
        ToTimestampUdf {
            signature: UdfSignature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for ToTimestampUdf {
    fn name(&self) -> &str {
        "to_timestamp"
    }

    fn signature(&self) -> &UdfSignature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (value, format) = match args.args.as_slice() {
            [value] => (value, None),
            [value, format] => (value, Some(format)),
            other => return exec_err!("to_timestamp takes 1 or 2 arguments, got {}", other.len()),
        };
        let scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let values = cast(&value.to_array(rows)?, &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        let out: TimestampNanosecondArray = match format {
            None => values.iter().map(|v| v.and_then(rfc3339)).collect(),
            // One format for the whole batch: parse it once.
            Some(ColumnarValue::Scalar(f)) => match f.cast_to(&DataType::Utf8)? {
                ScalarValue::Utf8(Some(f)) => match StrftimeItems::new(&f).parse() {
                    Ok(items) => values.iter().map(|v| v.and_then(|v| with_format(v, &items))).collect(),
                    Err(_) => TimestampNanosecondArray::new_null(values.len()),
                },
                _ => TimestampNanosecondArray::new_null(values.len()),
            },
            Some(ColumnarValue::Array(f)) => {
                let formats = cast(f, &DataType::Utf8)?;
                values
                    .iter()
                    .zip(formats.as_string::<i32>().iter())
                    .map(|(v, f)| {
                        let items = StrftimeItems::new(f?).parse().ok()?;
                        with_format(v?, &items)
                    })
                    .collect()
            }
        };
        let out: ArrayRef = Arc::new(out.with_timezone("UTC"));
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// Nanoseconds since the epoch of an RFC 3339 timestamp; `None` if it is not one or out of range.
fn rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok()?.timestamp_nanos_opt()
}

/// Nanoseconds since the epoch of `s` read with `items`: at its offset if it has one, else in
/// UTC; a date alone is midnight.
fn with_format(s: &str, items: &[Item<'_>]) -> Option<i64> {
    let mut parsed = Parsed::new();
    parse(&mut parsed, s, items.iter()).ok()?;
    if let Ok(t) = parsed.to_datetime() {
        return t.timestamp_nanos_opt();
    }
    if let Ok(t) = parsed.to_naive_datetime_with_offset(0) {
        return t.and_utc().timestamp_nanos_opt();
    }
    parsed.to_naive_date().ok()?.and_time(NaiveTime::MIN).and_utc().timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(s: &str, f: &str) -> Option<i64> {
        with_format(s, &StrftimeItems::new(f).parse().ok()?)
    }

    #[test]
    fn parses() {
        assert_eq!(rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(rfc3339("1970-01-01"), None);
        assert_eq!(rfc3339("9999-01-01T00:00:00Z"), None, "out of the nanosecond range");
        assert_eq!(fmt("1970-01-01 00:00:02", "%Y-%m-%d %H:%M:%S"), Some(2_000_000_000));
        assert_eq!(fmt("1970-01-02", "%Y-%m-%d"), Some(86_400_000_000_000));
        assert_eq!(fmt("1970-01-01 01:00 +0100", "%Y-%m-%d %H:%M %z"), Some(0));
        assert_eq!(fmt("10", "%s"), Some(10_000_000_000));
        assert_eq!(fmt("12:00", "%H:%M"), None, "no date");
        assert_eq!(fmt("x", "%Y"), None);
        assert_eq!(fmt("2024", "%Q"), None, "invalid format");
    }

    #[test]
    fn arrays_and_scalars() {
        let udf = ToTimestampUdf::new();
        let run = |args: Vec<ColumnarValue>, rows| {
            let args = ScalarFunctionArgs {
                args,
                arg_fields: vec![],
                number_rows: rows,
                return_field: Arc::new(arrow::datatypes::Field::new("r", udf.return_type(&[]).unwrap(), true)),
                config_options: Default::default(),
            };
            udf.invoke_with_args(args).unwrap()
        };
        let s = |v: &str| ColumnarValue::Scalar(ScalarValue::Utf8(Some(v.into())));
        let ColumnarValue::Scalar(v) = run(vec![s("1970-01-01T00:00:00Z")], 1) else { panic!("a scalar") };
        assert_eq!(v, ScalarValue::TimestampNanosecond(Some(0), Some("UTC".into())));
        let values: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![Some("1970-01-01"), None, Some("no")]));
        let ColumnarValue::Array(a) = run(vec![ColumnarValue::Array(values.clone()), s("%Y-%m-%d")], 3) else {
            panic!("an array")
        };
        assert_eq!(a.data_type(), &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())));
        let a = a.as_primitive::<arrow::datatypes::TimestampNanosecondType>();
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![Some(0), None, None]);
        let ColumnarValue::Array(a) = run(vec![ColumnarValue::Array(values), s("%Q")], 3) else { panic!("an array") };
        assert_eq!(a.null_count(), 3);
    }
}
