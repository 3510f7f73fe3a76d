//! `phoenix lsp` end to end: driven over stdio by real clients (PyPI `pytest-lsp` running
//! `engine/tests/lsp/test_lsp.py`, Debian's Neovim headless with its built-in client), and
//! in-process by a fuzzer of random edits that must never crash or hang the server.
//!
//! The clients are installed by `scripts/test`; a missing one fails the test (never skips it).

use lsp_server::{Connection, Message, Notification, Request, RequestId, Response};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

/// `PHOENIX_BIN` if set (see `support::phoenix`), else the binary cargo built.
fn phoenix_bin() -> PathBuf {
    std::env::var_os("PHOENIX_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_phoenix")), PathBuf::from)
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("phoenix-lsp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn pytest_lsp_drives_every_feature() {
    let probe = Command::new("python3").args(["-c", "import pytest_lsp"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "PyPI pytest-lsp is missing (scripts/test installs it: python3 -m pip install pytest-lsp)"
    );
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp"])
        .arg(temp("pytest"))
        .current_dir(root().join("engine/tests/lsp"))
        .env("PHOENIX_BIN", phoenix_bin())
        .output()
        .expect("run pytest");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pytest-lsp failed:\n{report}");
    println!("{report}");
}

#[test]
fn neovim_fixes_a_typo_and_formats() {
    let probe = Command::new("nvim").arg("--version").output();
    assert!(probe.is_ok_and(|o| o.status.success()), "Neovim is missing (scripts/test installs Debian's `neovim`)");
    let dir = temp("nvim");
    let good = std::fs::read_to_string(root().join("examples/quickstart.phx")).expect("quickstart.phx");
    // A typo, and layout `phoenix fmt` changes.
    let text = good.replacen("when amount >= 1000", "when amuont >= 1000", 1).replacen(
        "'product' | 'supplier' => catalog",
        "'product'|'supplier'   =>   catalog",
        1,
    );
    let typo_line = text.lines().position(|l| l.contains("amuont")).expect("the typo");
    let flow = dir.join("quickstart.phx");
    std::fs::write(&flow, &text).expect("write the flow");
    let mut child = Command::new("nvim")
        .args(["--headless", "--clean", "-u", "NONE", "-i", "NONE", "-n", "-c"])
        .arg(format!("luafile {}", root().join("engine/tests/lsp/nvim.lua").display()))
        .env("PHOENIX_BIN", phoenix_bin())
        .env("FLOW", &flow)
        .env("TYPO_LINE", typo_line.to_string())
        .env("XDG_STATE_HOME", &dir)
        .env("XDG_DATA_HOME", &dir)
        .env("XDG_CACHE_HOME", &dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start nvim");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait for nvim").is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("nvim did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("nvim output");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "nvim scenario failed: {log}");
    let saved = std::fs::read_to_string(&flow).expect("the saved flow");
    let fixed = text.replacen("amuont", "amount", 1);
    let expected = phoenix_dsl::fmt::format(&fixed).expect("the fixed flow parses");
    assert_eq!(saved, expected, "the saved flow is the fixed flow in `phoenix fmt` layout");
    assert_eq!(expected, good, "quickstart.phx is itself formatted");
}

// ---- fuzzing -----------------------------------------------------------------------------------

/// An in-process client of `lsp::serve`.
struct Client {
    conn: Connection,
    server: Option<std::thread::JoinHandle<Result<(), phoenix_engine::lsp::LspError>>>,
    next: i32,
}

impl Client {
    fn start() -> Client {
        let (server, conn) = Connection::memory();
        let server = std::thread::spawn(move || phoenix_engine::lsp::serve(server));
        let mut c = Client { conn, server: Some(server), next: 0 };
        c.request("initialize", json!({ "capabilities": {} }));
        c.notify("initialized", json!({}));
        c
    }

    fn notify(&self, method: &str, params: Value) {
        self.conn.sender.send(Notification::new(method.into(), params).into()).expect("the server is listening");
    }

    /// Send a request and wait for its answer, failing on a hang. Notifications in between
    /// (diagnostics) are skipped.
    fn request(&mut self, method: &str, params: Value) -> Response {
        self.next += 1;
        let id = RequestId::from(self.next);
        self.conn.sender.send(Request::new(id.clone(), method.into(), params).into()).expect("the server is listening");
        loop {
            match self.conn.receiver.recv_timeout(Duration::from_secs(20)) {
                Ok(Message::Response(r)) if r.id == id => return r,
                Ok(_) => {}
                Err(e) => panic!("no answer to {method} within 20 s: {e}"),
            }
        }
    }

    fn stop(mut self) {
        self.request("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        let result = self.server.take().expect("running").join().expect("the server thread does not panic");
        result.expect("the server ends cleanly");
    }
}

/// Random edits of the example flows, each followed by requests at random places: every request
/// is answered (no hang), none with an internal error (a panic caught), and the server ends
/// cleanly. `PHOENIX_LSP_FUZZ_EDITS` sets the edits per file (default 300).
#[test]
fn random_edits_never_crash_or_hang_the_server() {
    let edits: usize = std::env::var("PHOENIX_LSP_FUZZ_EDITS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let mut rng = fastrand::Rng::with_seed(0x05ee_d1a5);
    let tokens = [
        "|",
        ".",
        "@",
        "=",
        "=>",
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ",",
        "'",
        "\"",
        "`",
        "/*",
        "//",
        "\n",
        " ",
        "é",
        "😀",
        "\u{0}",
        "where ",
        "select ",
        "route ",
        "by ",
        "all ",
        "else ",
        "when ",
        "drop",
        "schema ",
        "source ",
        "sink ",
        "flow ",
        "import \"common/dead_letters.phx\"",
        "as ",
        "list<",
        ">",
        "?",
        "amount",
        "customer.",
        "errors",
        "kafka",
        "env(\"X\")",
        "1_000",
        "5ms",
        "10MiB",
        "null",
        "case ",
        "end",
        "*",
        "-",
        "||",
        "lower(",
    ];
    let dir = root().join("examples");
    let mut client = Client::start();
    for name in ["commerce.phx", "iot.phx", "logs.phx", "quickstart.phx"] {
        let path = dir.join(name);
        let uri = url_of(&path);
        let original = std::fs::read_to_string(&path).expect("example");
        let mut text = original.clone();
        client.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "phoenix", "version": 0, "text": text } }),
        );
        for version in 1..=edits as i32 {
            // Mostly a few edits away from a valid flow, as when typing; sometimes far off.
            if version % 25 == 0 {
                text = original.clone();
            }
            text = mutate(&mut rng, &text, &tokens);
            client.notify(
                "textDocument/didChange",
                json!({ "textDocument": { "uri": uri, "version": version }, "contentChanges": [{ "text": text }] }),
            );
            let lines = text.split('\n').count() as u32;
            let pos = json!({ "line": rng.u32(0..lines + 1), "character": rng.u32(0..120) });
            let doc = json!({ "uri": uri });
            let requests = [
                ("textDocument/hover", json!({ "textDocument": doc, "position": pos })),
                ("textDocument/completion", json!({ "textDocument": doc, "position": pos })),
                ("textDocument/definition", json!({ "textDocument": doc, "position": pos })),
                (
                    "textDocument/references",
                    json!({ "textDocument": doc, "position": pos, "context": { "includeDeclaration": true } }),
                ),
                ("textDocument/rename", json!({ "textDocument": doc, "position": pos, "newName": "x y" })),
                ("textDocument/documentSymbol", json!({ "textDocument": doc })),
                ("textDocument/semanticTokens/full", json!({ "textDocument": doc })),
                (
                    "textDocument/formatting",
                    json!({ "textDocument": doc, "options": { "tabSize": 2, "insertSpaces": true } }),
                ),
                (
                    "textDocument/codeAction",
                    json!({ "textDocument": doc, "range": { "start": pos, "end": pos }, "context": { "diagnostics": [] } }),
                ),
            ];
            let (method, params) = &requests[rng.usize(0..requests.len())];
            let r = client.request(method, params.clone());
            if let Err(e) = r.response_result {
                // Refusing to rename what cannot be renamed is an answer; a caught panic is not.
                assert_ne!(e.code, lsp_server::ErrorCode::InternalError as i32, "{method} failed on:\n{text}\n{e:?}");
            }
        }
    }
    client.stop();
}

fn url_of(p: &Path) -> String {
    lsp_types::Url::from_file_path(p).expect("an absolute path").to_string()
}

/// One random edit: delete a range, insert a token, or duplicate a slice.
fn mutate(rng: &mut fastrand::Rng, text: &str, tokens: &[&str]) -> String {
    let cut = |i: usize| (0..=i.min(text.len())).rev().find(|&j| text.is_char_boundary(j)).unwrap_or(0);
    let a = cut(rng.usize(0..=text.len()));
    let b = cut((a + rng.usize(0..40)).min(text.len()));
    match rng.u8(0..3) {
        0 => format!("{}{}", &text[..a], &text[b..]),
        1 => format!("{}{}{}", &text[..a], tokens[rng.usize(0..tokens.len())], &text[a..]),
        _ => format!("{}{}{}", &text[..b], &text[a..b], &text[b..]),
    }
}
