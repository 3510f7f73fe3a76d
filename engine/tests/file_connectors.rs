//! The `file` source and sink in-process: metadata (`@file`, `@line`, `@size`) as the flow reads
//! it, and fields or metadata nothing reads, which the engine validates but does not carry
//! (their columns travel as nulls). Neither may change what reaches a sink or `.errors`.

mod support;

use phoenix_engine::run::RunConfig;
use support::{json_lines, lines, start, temp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_filled_when_read() {
    let dir = temp("file-meta");
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("in/a.jsonl"), "{\"id\":1}\n\n{\"id\":2, \"x\":[1]}\n").unwrap();
    std::fs::write(dir.join("in/b.json"), "[{\"id\":3},{\"id\":4}]").unwrap();
    let flow = format!(
        r#"schema E {{ id: int }}
source s = file {{ path = "{dir}/in" }} as E
sink out = file {{ path = "{dir}/out.jsonl", append = false }}
s | select id, @file as file, @line as line, @size as size | out
"#,
        dir = dir.display()
    );
    start(&flow, RunConfig::new(1)).join().await.unwrap();
    let got: Vec<(i64, String, i64, i64)> = json_lines(&dir.join("out.jsonl"))
        .iter()
        .map(|v| {
            let file = v["file"].as_str().unwrap();
            let name = file.rsplit('/').next().unwrap().to_string();
            (v["id"].as_i64().unwrap(), name, v["line"].as_i64().unwrap(), v["size"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "a.jsonl".into(), 1, 8),
            (2, "a.jsonl".into(), 3, 17),
            (3, "b.json".into(), 1, 8),
            (4, "b.json".into(), 2, 8),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_fields_are_still_validated_and_passed_through() {
    let dir = temp("file-unread");
    // `n` and `at` are declared and never read by the flow: a wrong type in them is still a
    // dead letter, and events that pass keep them, byte for byte, in the original payload.
    let input = [
        r#"{"id":1,"n":5,"at":"2026-01-01T00:00:00Z","extra":"kept"}"#,
        r#"{"id":2,"n":"five","at":"2026-01-01T00:00:00Z"}"#,
        r#"{"id":3,"n":[1]}"#,
        r#"{"id":4,"at":"not a time"}"#,
        r#"{"id":5,"n":null,"at":null}"#,
        r#"{"id":6,"n":99999999999999999999}"#,
    ];
    std::fs::write(dir.join("in.jsonl"), input.join("\n")).unwrap();
    let flow = format!(
        r#"schema E {{ id: int, n: int?, at: timestamp? }}
source s = file {{ path = "{dir}/in.jsonl" }} as E
sink out = file {{ path = "{dir}/out.jsonl", append = false }}
sink ids = file {{ path = "{dir}/ids.jsonl", append = false }}
sink dead = file {{ path = "{dir}/dead.jsonl", append = false }}
s | where id > 0 | out
s | select id | ids
s.errors | dead
"#,
        dir = dir.display()
    );
    start(&flow, RunConfig::new(2)).join().await.unwrap();
    let mut out = lines(&dir.join("out.jsonl"));
    out.sort();
    assert_eq!(out, vec![input[0].to_string(), input[4].to_string()]);
    let mut ids = lines(&dir.join("ids.jsonl"));
    ids.sort();
    assert_eq!(ids, vec![r#"{"id":1}"#, r#"{"id":5}"#]);
    let mut dead: Vec<String> =
        json_lines(&dir.join("dead.jsonl")).iter().map(|v| v["payload"].as_str().unwrap().to_string()).collect();
    dead.sort();
    let mut want: Vec<String> = [1, 2, 3, 5].iter().map(|&i| input[i].to_string()).collect();
    want.sort();
    assert_eq!(dead, want);
}
