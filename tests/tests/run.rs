//! Run cases: `cases/run/NAME/flow.phx` runs on the real engine with every source fed from
//! `input.jsonl` (or `SOURCE.jsonl` when the flow has several sources), and every sink's output
//! must equal `expected/SINK.jsonl` line for line, byte for byte — so passthrough of undeclared
//! fields is checked exactly. A line containing `"<any>"` is compared as JSON instead, with that
//! string matching any value (dead letters carry a timestamp). Several sources run at once, so
//! their events interleave in any order: a case with several sources compares its lines sorted.
//! `BLESS=1` rewrites expectations.

use phoenix_engine::EngineCatalog;
use phoenix_engine::testing::run_captured;
use std::collections::HashMap;
use std::path::Path;

#[test]
fn run_cases() {
    let dir = phoenix_tests::root().join("tests/cases/run");
    let mut cases: Vec<_> =
        std::fs::read_dir(&dir).expect("cases/run").filter_map(|e| e.ok().map(|e| e.path())).collect();
    cases.sort();
    assert!(cases.len() >= 9, "run cases missing");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = rt.block_on(run_case(case)) {
            failures.push(format!("== {}\n{e}", case.display()));
        }
    }
    assert!(failures.is_empty(), "{} of {} run cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

async fn run_case(case: &Path) -> Result<(), String> {
    let c = phoenix_tests::compile(&case.join("flow.phx"));
    if c.has_errors() {
        return Err(c.render(false));
    }
    let catalog = EngineCatalog::new();
    let plan = c.plan(&catalog).ok_or("does not lower")?;
    let mut inputs = HashMap::new();
    let mut several = false;
    for i in plan.graph.node_indices() {
        if let phoenix_dsl::plan::NodeKind::Source { name, .. } = &plan.graph[i].kind {
            let own = case.join(format!("{name}.jsonl"));
            let path = if own.exists() { own } else { case.join("input.jsonl") };
            let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            // Lines as they are (blank ones too): the file source's line splitting is tested
            // elsewhere; here every line is one payload.
            let lines: Vec<Vec<u8>> =
                text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
            several |= !inputs.is_empty();
            inputs.insert(name.clone(), lines);
        }
    }
    let (captured, _) = run_captured(&plan, &c.sources, &catalog, &inputs).await.map_err(|e| e.to_string())?;
    let expected_dir = case.join("expected");
    let mut problems = Vec::new();
    for (sink, lines) in &captured {
        let path = expected_dir.join(format!("{sink}.jsonl"));
        let mut lines = lines.clone();
        if several {
            lines.sort();
        }
        let actual: String = lines.iter().map(|l| format!("{l}\n")).collect();
        if std::env::var_os("BLESS").is_some() {
            std::fs::create_dir_all(&expected_dir).map_err(|e| e.to_string())?;
            let keep = std::fs::read_to_string(&path).unwrap_or_default();
            // Keep hand-written wildcards when the output still matches them.
            if !(keep.contains("\"<any>\"") && same(&keep, &actual)) {
                std::fs::write(&path, &actual).map_err(|e| e.to_string())?;
            }
            continue;
        }
        let mut expected = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if several {
            let mut sorted: Vec<&str> = expected.lines().collect();
            sorted.sort();
            expected = sorted.iter().map(|l| format!("{l}\n")).collect();
        }
        if !same(&expected, &actual) {
            problems.push(format!("sink `{sink}`:\n--- expected ({})\n{expected}+++ actual\n{actual}", path.display()));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

fn same(expected: &str, actual: &str) -> bool {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    e.len() == a.len()
        && e.iter().zip(&a).all(|(e, a)| {
            if !e.contains("\"<any>\"") {
                return e == a;
            }
            match (serde_json::from_str(e), serde_json::from_str(a)) {
                (Ok(e), Ok(a)) => matches(&e, &a),
                _ => false,
            }
        })
}

fn matches(e: &serde_json::Value, a: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (e, a) {
        (Value::String(s), _) if s == "<any>" => true,
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len() && e.iter().all(|(k, v)| a.get(k).is_some_and(|x| matches(v, x)))
        }
        (Value::Array(e), Value::Array(a)) => e.len() == a.len() && e.iter().zip(a).all(|(x, y)| matches(x, y)),
        (e, a) => e == a,
    }
}
