//! What counts as a valid event, proven by differential fuzzing. Real event lines, damaged at
//! the byte level, go through Phoenix's decoder on both paths (the flat one-pass decoder, and
//! arrow-json after the validator) and through the `http` source into file sinks. Every verdict
//! must equal a strict reference — serde_json with no leniency, plus what it leaves to the
//! caller (an object, no repeated key), for the JSON; arrow-json alone, on a line it is given
//! only once that line is valid, for the schema's rules — and every line a normal sink writes
//! must parse strictly.
//!
//! `PHOENIX_FUZZ_LINES` sets the lines per decoder (default 100,000: seconds in a debug
//! build). Millions: `PHOENIX_FUZZ_LINES=3000000 cargo test --release -p phoenix-engine --test
//! json_validity`.

mod support;

use arrow::array::{Array, AsArray};
use arrow::datatypes::SchemaRef;
use arrow::json::ReaderBuilder;
use phoenix_dsl::types::{Record, RecordField, StreamType, Ty};
use phoenix_engine::exec::ack::Ack;
use phoenix_engine::exec::batch::RawBatchBuilder;
use phoenix_engine::exec::decode::Decoder;
use phoenix_engine::exec::flat::FlatDecoder;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use support::strict::strict_object;
use support::{Guard, curl, free_port, phoenix_run, temp, until};

// ---- The reference ----------------------------------------------------------------------------

/// What arrow-json alone makes of one line: accepted as one row of `schema`.
fn fits(line: &[u8], schema: &SchemaRef) -> bool {
    let Ok(mut d) = ReaderBuilder::new(schema.clone()).with_strict_mode(false).build_decoder() else {
        return false;
    };
    d.decode(line).is_ok() && d.flush().ok().flatten().is_some_and(|b| b.num_rows() == 1)
}

/// The schema's rule arrow-json does not keep: a number in an `int` or `timestamp` field must
/// be a whole number within 64 bits (arrow-json would truncate `1.5`, saturate `1e20`).
fn exact(value: &serde_json::Value, ty: &Ty) -> bool {
    use serde_json::Value;
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    match (value, ty) {
        (Value::Number(n), Ty::Int | Ty::Timestamp) => {
            n.is_i64() || n.as_f64().is_some_and(|v| v.fract() == 0.0 && (-TWO_63..TWO_63).contains(&v) && !n.is_u64())
        }
        (Value::Object(o), Ty::Record(r)) => r.fields.iter().all(|f| o.get(&f.name).is_none_or(|v| exact(v, &f.ty))),
        (Value::Array(a), Ty::List(t)) => a.iter().all(|v| exact(v, t)),
        _ => true,
    }
}

fn reference(line: &[u8], stream: &StreamType) -> bool {
    let schema: SchemaRef = Arc::new(arrow::datatypes::Schema::new(stream.record.arrow_fields()));
    strict_object(line)
        && exact(&serde_json::from_slice(line).expect("strict JSON"), &Ty::Record(stream.record.clone()))
        && fits(line, &schema)
}

// ---- Events and damage --------------------------------------------------------------------------

fn field(name: &str, ty: Ty, optional: bool) -> RecordField {
    RecordField { name: name.into(), ty, optional }
}

fn stream(fields: Vec<RecordField>) -> StreamType {
    StreamType { record: Arc::new(Record { fields }), open: true, metadata: Arc::new(Record::default()) }
}

/// Scalars only: the one-pass decoder's path.
fn flat() -> StreamType {
    stream(vec![
        field("id", Ty::Int, false),
        field("user", Ty::String, false),
        field("country", Ty::String, true),
        field("amount", Ty::Float, false),
        field("items", Ty::Int, true),
        field("ok", Ty::Bool, true),
        field("ts", Ty::Timestamp, false),
    ])
}

/// Records and lists: arrow-json's path.
fn nested() -> StreamType {
    let customer = Record { fields: vec![field("id", Ty::String, false), field("tier", Ty::String, true)] };
    let line = Record { fields: vec![field("sku", Ty::String, false), field("quantity", Ty::Int, false)] };
    stream(vec![
        field("id", Ty::String, false),
        field("type", Ty::String, false),
        field("ts", Ty::Timestamp, false),
        field("amount", Ty::Float, true),
        field("customer", Ty::Record(Arc::new(customer)), true),
        field("lines", Ty::List(Box::new(Ty::Record(Arc::new(line)))), true),
        field("tags", Ty::List(Box::new(Ty::String)), true),
    ])
}

const WORDS: &[&str] =
    &["alpha", "bravo", "café", "日本語", "q\\\"uote", "tab\\tbed", "\\u00e9t\\u00e9", "\\ud83d\\ude00"];

fn word(rng: &mut fastrand::Rng) -> String {
    format!("{}-{}", WORDS[rng.usize(..WORDS.len())], rng.u32(..1000))
}

/// Fields no schema declares: they must pass through, valid, or the event is refused.
fn extras(rng: &mut fastrand::Rng, out: &mut Vec<String>) {
    let pool = [
        format!(r#""note":"{}""#, word(rng)),
        r#""meta":{"a":[1,2,{"b":null}],"c":-1.5e-3,"d":{}}"#.to_string(),
        r#""big":123456789012345678901234567890"#.to_string(),
        format!(r#""score":{}"#, rng.f64() * 1e6 - 5e5),
        r#""flags":[true,false,null,[]]"#.to_string(),
    ];
    for p in pool {
        if rng.u8(..3) == 0 {
            out.push(p);
        }
    }
    // Now and then many keys: repeats past the first 16 are found another way.
    if rng.u8(..8) == 0 {
        out.extend((0..20).map(|i| format!(r#""k{i}":{i}"#)));
    }
}

fn flat_event(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut f = vec![
        format!(r#""id":{}"#, rng.i64(-1000..100_000)),
        format!(r#""user":"{}""#, word(rng)),
        format!(r#""amount":{:.2}"#, rng.f64() * 1000.0),
        format!(r#""ts":"2026-03-{:02}T{:02}:00:00.{}Z""#, rng.u8(1..29), rng.u8(..24), rng.u16(..1000)),
    ];
    match rng.u8(..4) {
        0 => {}
        1 => f.push(r#""country":null"#.into()),
        _ => f.push(format!(r#""country":"{}""#, ["DE", "FR", "ÉÈ", "\\u0041T"][rng.usize(..4)])),
    }
    if rng.bool() {
        f.push(format!(r#""items":{}"#, rng.u8(..20)));
    }
    if rng.bool() {
        f.push(format!(r#""ok":{}"#, rng.bool()));
    }
    extras(rng, &mut f);
    if rng.u8(..4) == 0 {
        rng.shuffle(&mut f);
    }
    format!("{{{}}}", f.join(",")).into_bytes()
}

fn nested_event(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut f = vec![
        format!(r#""id":"o-{}""#, rng.u32(..100_000)),
        format!(r#""type":"{}""#, ["order", "product", "supplier"][rng.usize(..3)]),
        format!(r#""ts":"2026-03-{:02}T{:02}:30:00Z""#, rng.u8(1..29), rng.u8(..24)),
    ];
    if rng.bool() {
        f.push(format!(r#""amount":{:.2}"#, rng.f64() * 500.0));
    }
    match rng.u8(..3) {
        0 => {}
        1 => f.push(format!(r#""customer":{{"id":"c-{}","tier":"gold"}}"#, rng.u16(..100))),
        _ => f.push(format!(r#""customer":{{"id":"{}","tier":null,"since":2019}}"#, word(rng))),
    }
    if rng.bool() {
        let lines: Vec<String> = (0..rng.usize(..4))
            .map(|i| format!(r#"{{"sku":"sku-{i}","quantity":{},"unit_price":9.99}}"#, rng.u8(1..9)))
            .collect();
        f.push(format!(r#""lines":[{}]"#, lines.join(",")));
    }
    if rng.bool() {
        f.push(format!(r#""tags":["{}","b"]"#, word(rng)));
    }
    extras(rng, &mut f);
    format!("{{{}}}", f.join(",")).into_bytes()
}

/// What a damaged line gets: bytes cut, or one of these inserted.
const INSERTS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\",
    b" ",
    b"\x00",
    b"\x01",
    b"\x1f",
    b"\t",
    b"\x7f",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"1e999",
    b"-1e400",
    b"1e-999",
    b"99999999999999999999",
    b"1.5",
    b"0",
    b"-",
    b".",
    b"e",
    b"\\u",
    b"\\ud800",
    b"\\udc00",
    b"\\u0041",
    b"true",
    b"null",
];

fn damage(rng: &mut fastrand::Rng, mut line: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.usize(1..4) {
        let at = rng.usize(..=line.len());
        match rng.u8(..10) {
            0..=2 => {
                let end = (at + rng.usize(1..9)).min(line.len());
                line.drain(at..end);
            }
            3 => {
                // Repeat a member: `"key":` found after `at`, copied right after the `{`.
                if let Some(k) = line[at..].iter().position(|&b| b == b'"').map(|k| at + k)
                    && let Some(colon) = line[k + 1..].iter().position(|&b| b == b':').map(|c| k + 1 + c)
                {
                    let mut member = line[k..=colon].to_vec();
                    member.extend_from_slice(b"0,");
                    line.splice(1..1, member);
                }
            }
            4 if at + 1 < line.len() => line.swap(at, at + 1),
            _ => {
                let insert = INSERTS[rng.usize(..INSERTS.len())];
                line.splice(at..at, insert.iter().copied());
            }
        }
    }
    line
}

/// `n` lines, a fifth of them as they were made, the rest damaged.
fn corpus(seed: u64, n: usize, make: fn(&mut fastrand::Rng) -> Vec<u8>) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| {
            let line = make(&mut rng);
            if rng.u8(..5) == 0 { line } else { damage(&mut rng, line) }
        })
        .collect()
}

fn lines_to_test() -> usize {
    std::env::var("PHOENIX_FUZZ_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

// ---- Phoenix's decoder against the reference ----------------------------------------------------

/// Decode `lines` (distinct) as one batch; which were accepted. Every line is accepted or
/// dead-lettered, never both, never neither.
fn verdicts(decoder: &Decoder, lines: &[&[u8]]) -> Vec<bool> {
    let mut b = RawBatchBuilder::default();
    for l in lines {
        b.push(l);
    }
    let raw = b.finish(Vec::new(), Ack::none());
    let (batch, dead) = decoder.decode(&raw);
    let accepted: HashSet<&[u8]> = match &batch {
        Some(b) => {
            let raw = b.column(b.num_columns() - 1).as_binary_view();
            (0..raw.len()).map(|i| raw.value(i)).collect()
        }
        None => HashSet::new(),
    };
    let dead: HashSet<&[u8]> = dead.iter().map(|d| d.payload.as_ref()).collect();
    assert_eq!(accepted.len() + dead.len(), lines.len(), "every line is accounted for once");
    lines
        .iter()
        .map(|l| {
            assert!(accepted.contains(l) != dead.contains(l), "{}", String::from_utf8_lossy(l));
            accepted.contains(l)
        })
        .collect()
}

fn differential(name: &str, stream: StreamType, make: fn(&mut fastrand::Rng) -> Vec<u8>, seed: u64) {
    let declared = stream.record.fields.len();
    // Reading every field, and none (fields nothing reads are still checked, not built).
    let decoders = [Decoder::new(&stream, "source s", &[]), Decoder::new(&stream, "source s", &vec![false; declared])];
    // The one-pass decoder alone, line by line: in a batch it answers only when every line
    // suits it, so a damaged batch would hide what it accepts.
    let schema = Arc::new(arrow::datatypes::Schema::new(stream.record.arrow_fields()));
    let one_pass = FlatDecoder::new(&schema, &[]);
    let lines = corpus(seed, lines_to_test(), make);
    let (mut valid, mut mismatches) = (0usize, Vec::new());
    for chunk in lines.chunks(512) {
        let mut seen = HashSet::new();
        let chunk: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).filter(|l| seen.insert(*l)).collect();
        let want: Vec<bool> = chunk.iter().map(|l| reference(l, &stream)).collect();
        valid += want.iter().filter(|v| **v).count();
        if let Some(flat) = &one_pass {
            for (line, want) in chunk.iter().zip(&want) {
                let took = flat.decode(std::iter::once(*line)).is_some();
                if took && !want && mismatches.len() < 20 {
                    mismatches.push(format!("one-pass decoder took: {}", String::from_utf8_lossy(line)));
                }
            }
        }
        for d in &decoders {
            for ((line, got), want) in chunk.iter().zip(verdicts(d, &chunk)).zip(&want) {
                if got != *want && mismatches.len() < 20 {
                    mismatches.push(format!("phoenix {got}, reference {want}: {}", String::from_utf8_lossy(line)));
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{name}: verdicts differ:\n{}", mismatches.join("\n"));
    assert!(name != "flat" || one_pass.is_some(), "the flat schema takes the one-pass decoder");
    // The corpus is worth something only if it has plenty of both.
    let n = lines.len();
    assert!(valid > n / 5 && valid < n * 4 / 5, "{name}: {valid} of {n} lines valid");
    eprintln!("{name}: {n} lines, {valid} valid, verdicts equal on both decoders");
}

#[test]
fn flat_path_agrees_with_the_strict_reference() {
    differential("flat", flat(), flat_event, 16);
}

#[test]
fn general_path_agrees_with_the_strict_reference() {
    differential("nested", nested(), nested_event, 61);
}

// ---- The same through the http source, into real sinks ------------------------------------------

/// NDJSON bodies over HTTP: each 200 says which lines went to `.errors` (exactly the ones the
/// reference refuses); every line written to a normal sink parses strictly, whether written as
/// it came, patched, or re-encoded from columns.
#[test]
fn http_bodies_are_judged_line_by_line() {
    let dir = temp("json-validity-http");
    let port = free_port();
    let flow = dir.join("flow.phx");
    std::fs::write(
        &flow,
        format!(
            r#"schema E {{ id: string, type: string, ts: timestamp, amount: float?, customer: {{ id: string, tier: string? }}?, lines: list<{{ sku: string, quantity: int }}>?, tags: list<string>? }}
source api = http {{ address = "127.0.0.1:{port}" }} as E
sink raw = file {{ path = "{d}/raw.jsonl" }}
sink patched = file {{ path = "{d}/patched.jsonl" }}
sink columns = file {{ path = "{d}/columns.jsonl" }}
sink dead = file {{ path = "{d}/dead.jsonl" }}
api | raw
api | select *, upper(type) as kind | patched
api | select id, amount, customer.tier as tier, ts | columns
api.errors | dead
"#,
            d = dir.display()
        ),
    )
    .unwrap();
    let child = Guard::new(phoenix_run(&flow, &dir.join("phoenix.log")).spawn().expect("phoenix run"));
    let addr = format!("127.0.0.1:{port}");
    until(&dir, "the http source listens", Duration::from_secs(60), || std::net::TcpStream::connect(&addr).is_ok());

    let stream = nested();
    // Lines as the NDJSON framing sees them: no line breaks inside, trimmed, none blank.
    let trim = |l: &[u8]| -> Vec<u8> {
        let s = l.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(l.len());
        let e = l.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(s, |e| e + 1);
        l[s..e].to_vec()
    };
    let lines: Vec<Vec<u8>> = corpus(7, (lines_to_test() / 10).max(2_000), nested_event)
        .into_iter()
        .filter(|l| !l.contains(&b'\n') && !l.contains(&b'\r'))
        .map(|l| trim(&l))
        .filter(|l| !l.is_empty())
        .collect();
    let (mut want_ok, mut want_dead) = (BTreeMap::<Vec<u8>, usize>::new(), BTreeMap::<String, usize>::new());
    // 100 lines a request: at most 100 refusals, so the answer lists every one.
    for body in lines.chunks(100) {
        let refused: Vec<usize> = (0..body.len()).filter(|&i| !reference(&body[i], &stream)).collect();
        for (i, l) in body.iter().enumerate() {
            if refused.contains(&i) {
                *want_dead.entry(String::from_utf8_lossy(l).into_owned()).or_default() += 1;
            } else {
                *want_ok.entry(l.clone()).or_default() += 1;
            }
        }
        let text = body.join(&b'\n');
        let (status, answer) = curl(&addr, "POST", "/", Some("application/x-ndjson"), Some(&text));
        assert_eq!(status, 200, "{answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["accepted"].as_u64(), Some((body.len() - refused.len()) as u64), "{answer}");
        assert_eq!(v["rejected"].as_u64(), Some(refused.len() as u64), "{answer}");
        let listed: Vec<usize> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert!(e["error"].as_str().is_some_and(|r| !r.is_empty()), "{e}");
                e["index"].as_u64().unwrap() as usize
            })
            .collect();
        assert_eq!(listed, refused, "{answer}");
    }
    support::signal(child.child(), "-TERM");
    let out = support::wait(child.take(), Duration::from_secs(60));
    assert!(out.status.success(), "phoenix exits 0 on SIGTERM");

    // Every line a normal sink wrote parses strictly; the raw sink wrote exactly the valid lines.
    let mut got_ok = BTreeMap::<Vec<u8>, usize>::new();
    for sink in ["raw", "patched", "columns"] {
        let text = std::fs::read(dir.join(format!("{sink}.jsonl"))).unwrap();
        let written: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(written.len(), want_ok.values().sum::<usize>(), "{sink}: one line per valid event");
        for l in &written {
            assert!(strict_object(l), "{sink} wrote a line that is not strict JSON: {}", String::from_utf8_lossy(l));
            if sink == "raw" {
                *got_ok.entry(l.to_vec()).or_default() += 1;
            }
        }
    }
    assert!(got_ok == want_ok, "the raw sink holds exactly the valid lines, as they came");
    let mut got_dead = BTreeMap::<String, usize>::new();
    for d in support::json_lines(&dir.join("dead.jsonl")) {
        *got_dead.entry(d["payload"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert!(got_dead == want_dead, "the dead letters are exactly the refused lines");
    eprintln!("http: {} lines, {} valid", lines.len(), want_ok.values().sum::<usize>());
}
