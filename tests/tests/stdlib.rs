//! Every stdlib example runs. Each expression is compiled as `select <expr> as r` over a source
//! of empty events, lowered to a DataFusion expression, turned into a physical expression and
//! evaluated on the event `{}`; the value must equal the documented result.

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion_common::{DFSchema, ScalarValue};
use datafusion_expr::Expr;
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::physical_planning_context::PhysicalPlanningContext;
use phoenix_dsl::catalog::{Catalog, Example, Function};
use phoenix_dsl::plan::{NodeKind, Plan};
use phoenix_engine::EngineCatalog;
use serde_json::Value;
use std::sync::Arc;

/// The raw payload of the event every example runs on.
const EVENT: &str = "{}";

#[test]
fn stdlib_examples_evaluate() {
    let catalog = EngineCatalog::new();
    let mut failures = Vec::new();
    let mut functions = 0;
    let mut count = 0;
    for f in catalog.stdlib().iter() {
        functions += 1;
        assert!(!f.examples().is_empty(), "`{}` has no examples", f.name());
        assert!(catalog.function(f.name()).is_some());
        for ex in f.examples() {
            count += 1;
            if let Err(e) = run_example(&catalog, f, ex) {
                failures.push(format!("`{}`: {}\n    {e}", f.name(), ex.expr));
            }
        }
    }
    assert!(failures.is_empty(), "{} example(s) failed:\n{}", failures.len(), failures.join("\n"));
    assert!(functions >= 21, "only {functions} functions");
    assert!(count >= 40, "only {count} examples");
}

/// Compile, lower and evaluate one example, comparing its value with the documented result.
fn run_example(catalog: &EngineCatalog, f: &dyn Function, ex: &Example) -> Result<(), String> {
    let expected: Value = serde_json::from_str(ex.result)
        .map_err(|e| format!("the documented result {:?} is not JSON: {e}", ex.result))?;
    let got = evaluate(catalog, ex.expr)?;
    if same(&expected, &got) {
        Ok(())
    } else {
        Err(format!("expected {expected}, got {got} (`{}`)", f.signature().display(f.name())))
    }
}

/// The value of `expr` on the event `{}`, as JSON.
fn evaluate(catalog: &EngineCatalog, expr: &str) -> Result<Value, String> {
    let flow = format!("source s = stdin as {{}}\nsink o = stdout\ns | select {expr} as r | o\n");
    let loader = phoenix_dsl::MemoryLoader::new([("example.phx".to_string(), flow.into_bytes())]);
    let c = phoenix_dsl::compile("example.phx", &loader, catalog);
    if c.has_errors() {
        return Err(format!("does not compile:\n{}", c.render(false)));
    }
    let plan = c.plan(catalog).ok_or("does not lower")?;
    let (input, logical) = projected(&plan).ok_or("the plan has no `select` reading the source")?;

    let df_schema = DFSchema::try_from(input.as_ref().clone()).map_err(|e| format!("schema: {e}"))?;
    let physical = datafusion_physical_expr::create_physical_expr(
        &logical,
        &df_schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
    .map_err(|e| format!("no physical expression for `{logical}`: {e}"))?;
    let batch = event_batch(&input)?;
    let value = physical.evaluate(&batch).map_err(|e| format!("evaluation failed: {e}"))?;
    let array = value.into_array(1).map_err(|e| format!("result: {e}"))?;
    if array.len() != 1 {
        return Err(format!("expected one value, got {}", array.len()));
    }
    to_json(&array)
}

/// The `select` item's expression and the schema of the source's events, which it reads.
fn projected(plan: &Plan) -> Option<(Arc<Schema>, Expr)> {
    let source = plan.graph.node_weights().find(|n| matches!(n.kind, NodeKind::Source { .. }))?;
    let item = plan.graph.node_weights().find_map(|n| match &n.kind {
        NodeKind::Project { items, .. } => items.first().map(|(_, e)| e.clone()),
        _ => None,
    })?;
    Some((source.output.arrow_schema(), item))
}

/// One event `{}` with every metadata column filled: `@size` is the payload's length, other
/// metadata is NULL where it may be and a default value where it may not.
fn event_batch(schema: &Arc<Schema>) -> Result<RecordBatch, String> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let value = if field.name() == "@size" {
                ScalarValue::Int64(Some(EVENT.len() as i64))
            } else if field.is_nullable() {
                ScalarValue::try_from(field.data_type())?
            } else {
                ScalarValue::new_default(field.data_type())?
            };
            value.to_array_of_size(1)
        })
        .collect::<Result<Vec<ArrayRef>, _>>()
        .map_err(|e| format!("building the event: {e}"))?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| format!("building the event: {e}"))
}

/// A one-value array as JSON: timestamps as RFC 3339 strings, durations as nanoseconds.
fn to_json(array: &ArrayRef) -> Result<Value, String> {
    if array.is_null(0) {
        return Ok(Value::Null);
    }
    if let DataType::Timestamp(_, _) = array.data_type() {
        let options = FormatOptions::new();
        let formatter = ArrayFormatter::try_new(array.as_ref(), &options).map_err(|e| e.to_string())?;
        return Ok(Value::String(formatter.value(0).to_string()));
    }
    let scalar = ScalarValue::try_from_array(array, 0).map_err(|e| e.to_string())?;
    Ok(match scalar {
        ScalarValue::Boolean(Some(b)) => Value::Bool(b),
        ScalarValue::Int8(Some(i)) => i.into(),
        ScalarValue::Int16(Some(i)) => i.into(),
        ScalarValue::Int32(Some(i)) => i.into(),
        ScalarValue::Int64(Some(i)) => i.into(),
        ScalarValue::UInt8(Some(i)) => i.into(),
        ScalarValue::UInt16(Some(i)) => i.into(),
        ScalarValue::UInt32(Some(i)) => i.into(),
        ScalarValue::UInt64(Some(i)) => i.into(),
        ScalarValue::Float32(Some(x)) => float(f64::from(x))?,
        ScalarValue::Float64(Some(x)) => float(x)?,
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Value::String(s)
        }
        ScalarValue::DurationNanosecond(Some(n)) => n.into(),
        other => return Err(format!("cannot show a {} result as JSON", other.data_type())),
    })
}

fn float(x: f64) -> Result<Value, String> {
    serde_json::Number::from_f64(x).map(Value::Number).ok_or_else(|| format!("{x} is not a JSON number"))
}

/// JSON equality where floats compare numerically (`3.0` = `3.0`, `0.1 + 0.2` ≈ `0.3`) and an
/// int result must be written as an int.
fn same(expected: &Value, got: &Value) -> bool {
    match (expected, got) {
        (Value::Number(e), Value::Number(g)) if g.is_f64() => match (e.as_f64(), g.as_f64()) {
            (Some(e), Some(g)) => e == g || (e - g).abs() <= 1e-12 * e.abs().max(g.abs()),
            _ => false,
        },
        _ => expected == got,
    }
}
