//! `json_get`: The value at a dot path in a JSON document, as text.

use crate::prelude::*;
use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion_common::{Result, ScalarValue, exec_err};
use datafusion_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature as UdfSignature, Volatility};
use serde_json::value::RawValue;
use std::collections::HashMap;

#[derive(Debug)]
pub struct JsonGet;

impl Function for JsonGet {
    fn name(&self) -> &'static str {
        "json_get"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![param("doc", ParamType::Exact(Ty::String)), param("path", ParamType::Exact(Ty::String))],
            Returns::Exact(Ty::String),
        )
    }

    fn summary(&self) -> &'static str {
        "The value at a dot path (`user.name`, `items.0`) of a JSON document: a string unquoted, \
         anything else as compact JSON; NULL when `doc` is not JSON or nothing is at `path`."
    }

    fn examples(&self) -> &'static [Example] {
        &[
            Example { expr: r#"json_get('{"user": {"id": 7, "name": "Ann"}}', 'user.name')"#, result: r#""Ann""# },
            Example {
                expr: r#"json_get('{"items": [{"sku": "a1"}, {"sku": "b2", "qty": 2}]}', 'items.1')"#,
                result: r#""{\"sku\":\"b2\",\"qty\":2}""#,
            },
            Example { expr: r#"json_get('{"user": {"id": 7}}', 'user.email')"#, result: "null" },
        ]
    }

    fn udf(&self) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::from(JsonGetUdf::new()))
    }

    fn may_return_null(&self) -> bool {
        true
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonGetUdf {
    signature: UdfSignature,
}

impl JsonGetUdf {
    fn new() -> JsonGetUdf {
        JsonGetUdf { signature: UdfSignature::exact(vec![DataType::Utf8, DataType::Utf8], Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for JsonGetUdf {
    fn name(&self) -> &str {
        "json_get"
    }

    fn signature(&self) -> &UdfSignature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [doc, path] = args.args.as_slice() else {
            return exec_err!("json_get takes 2 arguments, got {}", args.args.len());
        };
        let scalar = matches!((doc, path), (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let docs = cast(&doc.to_array(rows)?, &DataType::Utf8)?;
        let docs = docs.as_string::<i32>();
        let mut out = StringBuilder::with_capacity(docs.len(), docs.len() * 8);
        match path {
            // One path for the whole batch: split it once.
            ColumnarValue::Scalar(p) => {
                let p = p.cast_to(&DataType::Utf8)?;
                let steps = match &p {
                    ScalarValue::Utf8(Some(p)) => Some(steps(p)),
                    _ => None,
                };
                for d in docs.iter() {
                    out.append_option(d.zip(steps.as_deref()).and_then(|(d, s)| lookup(d, s)));
                }
            }
            ColumnarValue::Array(p) => {
                let paths = cast(p, &DataType::Utf8)?;
                for (d, p) in docs.iter().zip(paths.as_string::<i32>().iter()) {
                    out.append_option(d.zip(p).and_then(|(d, p)| lookup(d, &steps(p))));
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

/// `a.b.0` → `["a", "b", "0"]`; the empty path is the whole document.
fn steps(path: &str) -> Vec<&str> {
    if path.is_empty() { Vec::new() } else { path.split('.').collect() }
}

/// The text of the value at `path` in `doc`: NULL for invalid JSON, a missing path or JSON `null`.
fn lookup(doc: &str, path: &[&str]) -> Option<String> {
    // Walk raw values so the result keeps the document's key order and number spelling.
    let mut value: &RawValue = serde_json::from_str(doc).ok()?;
    for step in path {
        value = child(value, step)?;
    }
    let text = value.get();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text).ok(),
        b'n' => None,
        _ => Some(compact(text)),
    }
}

/// The member `step` of an object, or element `step` (a non-negative integer) of an array.
fn child<'a>(value: &'a RawValue, step: &str) -> Option<&'a RawValue> {
    let text = value.get();
    match text.as_bytes().first()? {
        b'{' => serde_json::from_str::<HashMap<String, &RawValue>>(text).ok()?.remove(step),
        b'[' => {
            let i: usize = step.parse().ok()?;
            serde_json::from_str::<Vec<&RawValue>>(text).ok()?.get(i).copied()
        }
        _ => None,
    }
}

/// Valid JSON text without the whitespace between tokens.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(doc: &str, path: &str) -> Option<String> {
        lookup(doc, &steps(path))
    }

    #[test]
    fn paths() {
        let doc = r#" { "a": {"b": [10, {"c": "x\"y"}, null]}, "n": 1.50, "0": true } "#;
        assert_eq!(get(doc, "a.b.0").as_deref(), Some("10"));
        assert_eq!(get(doc, "a.b.1.c").as_deref(), Some("x\"y"));
        assert_eq!(get(doc, "a.b.1").as_deref(), Some(r#"{"c":"x\"y"}"#));
        assert_eq!(get(doc, "a.b").as_deref(), Some(r#"[10,{"c":"x\"y"},null]"#));
        assert_eq!(get(doc, "n").as_deref(), Some("1.50"));
        assert_eq!(get(doc, "0").as_deref(), Some("true"));
        assert_eq!(get(doc, "a.b.2"), None);
        assert_eq!(get(doc, "a.b.3"), None);
        assert_eq!(get(doc, "a.b.-1"), None);
        assert_eq!(get(doc, "a.x"), None);
        assert_eq!(get(doc, "n.x"), None);
        assert_eq!(get(doc, "").as_deref(), Some(r#"{"a":{"b":[10,{"c":"x\"y"},null]},"n":1.50,"0":true}"#));
        assert_eq!(get("not json", "a"), None);
        assert_eq!(get(r#"{"a": 1} trailing"#, "a"), None);
        assert_eq!(get(r#""just a string""#, "").as_deref(), Some("just a string"));
    }

    #[test]
    fn arrays_and_scalars() {
        let udf = JsonGetUdf::new();
        let docs: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![
            Some(r#"{"a": 1}"#),
            None,
            Some("{"),
            Some(r#"{"a": "s"}"#),
        ]));
        let run = |path: ColumnarValue| {
            let args = ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(docs.clone()), path],
                arg_fields: vec![],
                number_rows: 4,
                return_field: Arc::new(arrow::datatypes::Field::new("r", DataType::Utf8, true)),
                config_options: Default::default(),
            };
            let ColumnarValue::Array(a) = udf.invoke_with_args(args).unwrap() else { panic!("an array") };
            a.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>()
        };
        let want = vec![Some("1".to_string()), None, None, Some("s".to_string())];
        assert_eq!(run(ColumnarValue::Scalar(ScalarValue::Utf8(Some("a".into())))), want);
        let paths: ArrayRef = Arc::new(arrow::array::StringArray::from(vec!["a", "a", "a", "a"]));
        assert_eq!(run(ColumnarValue::Array(paths)), want);
        assert_eq!(run(ColumnarValue::Scalar(ScalarValue::Utf8(None))), vec![None; 4]);
    }
}
