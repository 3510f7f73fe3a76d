//! The front end never panics or hangs, whatever the input: mutated cases and examples,
//! invalid UTF-8, and pathological nesting. (A coverage-guided target lives in `fuzz/`.)

use phoenix_tests::{phx_files, root};

fn compile_bytes(bytes: Vec<u8>) {
    let loader = phoenix_dsl::MemoryLoader::new([("input.phx".to_string(), bytes.clone())]);
    let catalog = phoenix_engine::EngineCatalog::new();
    let c = phoenix_dsl::compile("input.phx", &loader, &catalog);
    let _ = c.render(false);
    let _ = c.plan(&catalog);
    if let Ok(text) = String::from_utf8(bytes)
        && let Ok(f) = phoenix_dsl::fmt::format(&text)
    {
        let again = phoenix_dsl::fmt::format(&f).ok();
        assert_eq!(again.as_deref(), Some(f.as_str()), "fmt not idempotent on:\n{text}");
    }
}

/// A small deterministic PRNG (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_inputs_never_panic() {
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for dir in ["examples", "tests/cases/errors", "tests/cases/plan", "tests/cases/parse"] {
        for p in phx_files(&root().join(dir)) {
            corpus.push(std::fs::read(p).expect("read"));
        }
    }
    assert!(!corpus.is_empty());
    let tokens: &[&[u8]] = &[
        b"|",
        b"{",
        b"}",
        b"(",
        b")",
        b",",
        b"'",
        b"\"",
        b"=>",
        b" route ",
        b" where ",
        b" select ",
        b".errors",
        b"@",
        b"\xff",
        b"\n",
        b"/*",
        b" and ",
        b" not ",
        b"`",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for i in 0..3000 {
        let base = &corpus[i % corpus.len()];
        let mut m = base.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(m.len() + 1);
            match rng.below(4) {
                0 if !m.is_empty() => {
                    let end = (at + 1 + rng.below(20)).min(m.len());
                    m.drain(at.min(end)..end);
                }
                1 => {
                    let t = tokens[rng.below(tokens.len())];
                    m.splice(at..at, t.iter().copied());
                }
                2 if !m.is_empty() => {
                    let j = rng.below(m.len());
                    m[j] = (rng.next() & 0xff) as u8;
                }
                _ => m.truncate(at),
            }
        }
        compile_bytes(m);
    }
}

#[test]
fn pathological_inputs() {
    let deep_parens =
        format!("source s = stdin\nsink o = stdout\ns | where {}true{} | o\n", "(".repeat(5000), ")".repeat(5000));
    let long_chain =
        format!("source s = stdin as {{ a: int }}\nsink o = stdout\ns | where {}a > 0 | o\n", "a + ".repeat(50_000));
    let many_nots =
        format!("source s = stdin as {{ a: bool }}\nsink o = stdout\ns | where {}a | o\n", "not ".repeat(20_000));
    let many_negs =
        format!("source s = stdin as {{ a: int }}\nsink o = stdout\ns | where {}a > 0 | o\n", "- ".repeat(20_000));
    let deep_types = format!("schema A {{ x: {}int{} }}\n", "list<".repeat(400), ">".repeat(400));
    let unclosed = "(".repeat(100_000);
    for input in [deep_parens, long_chain, many_nots, many_negs, deep_types, unclosed] {
        compile_bytes(input.into_bytes());
    }
    compile_bytes(vec![0xff, 0xfe, 0x00, b'{']);
    compile_bytes(Vec::new());
}

/// `phoenix serve` and the language server compile on threads with little stack (a tokio worker
/// has 2 MiB); the deepest expression the parser admits still compiles, plans and formats there.
#[test]
fn deepest_admitted_expression_compiles_on_a_small_stack() {
    let depth = phoenix_dsl::parser::MAX_DEPTH - 8;
    let text = format!("source s = stdin as {{ a: bool }}\nsink o = stdout\ns | where {}a | o\n", "not ".repeat(depth));
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let loader = phoenix_dsl::MemoryLoader::new([("input.phx".to_string(), text.clone().into_bytes())]);
            let catalog = phoenix_engine::EngineCatalog::new();
            let c = phoenix_dsl::compile("input.phx", &loader, &catalog);
            assert!(!c.has_errors(), "{}", c.render(false));
            let plan = c.plan(&catalog).expect("plans");
            let metrics = phoenix_engine::observability::metrics::Metrics::new(phoenix_engine::taskgraph::node_labels(
                &plan, &c.sources,
            ));
            phoenix_engine::taskgraph::TaskGraph::build(&plan, &c.sources, &metrics).expect("builds");
            phoenix_dsl::fmt::format(&text).expect("formats");
        })
        .expect("spawn")
        .join()
        .expect("no overflow");
}
