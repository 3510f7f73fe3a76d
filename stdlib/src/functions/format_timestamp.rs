//! `format_timestamp`: Writes a timestamp as text in a `strftime` format, in UTC.

use crate::prelude::*;
use arrow::array::{ArrayRef, AsArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use chrono::DateTime;
use chrono::format::{Item, StrftimeItems};
use datafusion_common::{Result, ScalarValue, exec_err};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature as UdfSignature, Volatility};
use std::fmt::Write;

#[derive(Debug)]
pub struct FormatTimestamp;

impl Function for FormatTimestamp {
    fn name(&self) -> &'static str {
        "format_timestamp"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![param("ts", ParamType::Exact(Ty::Timestamp)), param("format", ParamType::Exact(Ty::String))],
            Returns::Exact(Ty::String),
        )
    }

    fn summary(&self) -> &'static str {
        "Writes a timestamp in UTC in the `strftime` `format` (`'%Y-%m-%d %H:%M:%S'`); NULL when the \
         format is invalid."
    }

    fn examples(&self) -> &'static [Example] {
        &[
            Example {
                expr: "format_timestamp(to_timestamp('2024-05-01T12:30:00Z'), '%Y-%m-%d')",
                result: r#""2024-05-01""#,
            },
            Example {
                expr: "format_timestamp(to_timestamp('2024-05-01T14:30:00+02:00'), '%a %H:%M')",
                result: r#""Wed 12:30""#,
            },
            Example { expr: "format_timestamp(to_timestamp('2024-05-01T12:30:00Z'), '%Q')", result: "null" },
        ]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::from(FormatTimestampUdf::new()))
    }

    fn may_return_null(&self) -> bool {
        true
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FormatTimestampUdf {
    signature: UdfSignature,
}

impl FormatTimestampUdf {
    fn new() -> FormatTimestampUdf {
        FormatTimestampUdf {
            signature: UdfSignature::exact(
                vec![DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), DataType::Utf8],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for FormatTimestampUdf {
    fn name(&self) -> &str {
        "format_timestamp"
    }

    fn signature(&self) -> &UdfSignature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [ts, format] = args.args.as_slice() else {
            return exec_err!("format_timestamp takes 2 arguments, got {}", args.args.len());
        };
        let scalar = matches!((ts, format), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let ts = cast(&ts.to_array(rows)?, &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())))?;
        let ts = ts.as_primitive::<TimestampNanosecondType>();
        let mut out = StringBuilder::with_capacity(ts.len(), ts.len() * 16);
        let mut buf = String::new();
        match format {
            // One format for the whole batch: parse it once.
            ColumnarValue::Scalar(f) => {
                let items = match f.cast_to(&DataType::Utf8)? {
                    ScalarValue::Utf8(Some(f)) => StrftimeItems::new(&f).parse_to_owned().ok(),
                    _ => None,
                };
                for t in ts.iter() {
                    out.append_option(t.zip(items.as_deref()).and_then(|(t, items)| format_into(&mut buf, t, items)));
                }
            }
            ColumnarValue::Array(f) => {
                let formats = cast(f, &DataType::Utf8)?;
                for (t, f) in ts.iter().zip(formats.as_string::<i32>().iter()) {
                    let items = f.and_then(|f| StrftimeItems::new(f).parse().ok());
                    out.append_option(t.zip(items).and_then(|(t, items)| format_into(&mut buf, t, &items)));
                }
            }
        }
        let out: ArrayRef = Arc::new(out.finish());
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// `nanos` since the epoch in UTC, formatted with `items` (reusing `buf`).
fn format_into<'a>(buf: &'a mut String, nanos: i64, items: &[Item<'_>]) -> Option<&'a str> {
    buf.clear();
    // A valid format can still fail to write (`%Z`-like items without data): NULL, never a panic.
    write!(buf, "{}", DateTime::from_timestamp_nanos(nanos).format_with_items(items.iter())).ok()?;
    Some(buf.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(nanos: i64, f: &str) -> Option<String> {
        let items = StrftimeItems::new(f).parse().ok()?;
        format_into(&mut String::new(), nanos, &items).map(str::to_string)
    }

    #[test]
    fn formats() {
        assert_eq!(fmt(0, "%Y-%m-%dT%H:%M:%S%.3fZ").as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(fmt(1_500_000_000, "%s %Z %:z").as_deref(), Some("1 UTC +00:00"));
        assert_eq!(fmt(-86_400_000_000_000, "%F").as_deref(), Some("1969-12-31"));
        assert_eq!(fmt(0, "%Q"), None);
        assert_eq!(fmt(0, "%").as_deref(), None);
    }

    #[test]
    fn arrays_and_scalars() {
        let udf = FormatTimestampUdf::new();
        let ts: ArrayRef =
            Arc::new(arrow::array::TimestampNanosecondArray::from(vec![Some(0), None]).with_timezone("UTC"));
        let run = |format: ColumnarValue| {
            let args = ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(ts.clone()), format],
                arg_fields: vec![],
                number_rows: 2,
                return_field: Arc::new(arrow::datatypes::Field::new("r", DataType::Utf8, true)),
                config_options: Default::default(),
            };
            let ColumnarValue::Array(a) = udf.invoke_with_args(args).unwrap() else { panic!("an array") };
            a.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>()
        };
        let year = ColumnarValue::Scalar(ScalarValue::Utf8(Some("%Y".into())));
        assert_eq!(run(year), vec![Some("1970".to_string()), None]);
        let formats: ArrayRef = Arc::new(arrow::array::StringArray::from(vec!["%m", "%m"]));
        assert_eq!(run(ColumnarValue::Array(formats)), vec![Some("01".to_string()), None]);
        assert_eq!(run(ColumnarValue::Scalar(ScalarValue::Utf8(Some("%Q".into())))), vec![None, None]);
    }
}
