//! Diagnostics: what the user did wrong, where, and what to do about it.
//!
//! Every error a user can cause has a stable [`Code`], a primary span, optional secondary spans
//! and a one-line help. Rendering is rustc-style through `codespan-reporting`.

use crate::span::{SourceMap, Span};
use codespan_reporting::diagnostic as cs;
use codespan_reporting::term::{self, termcolor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

macro_rules! codes {
    ($( $name:ident = $code:literal, $sev:ident, $title:literal, $explain:literal; )*) => {
        /// Every diagnostic Phoenix can report. Codes are stable: tests, docs and
        /// `phoenix check --explain CODE` refer to them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $( $name, )* }

        impl Code {
            pub const ALL: &'static [Code] = &[ $( Code::$name, )* ];

            /// `E0020`, `W0001`, ...
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$name => $code, )* }
            }

            pub fn severity(self) -> Severity {
                match self { $( Code::$name => Severity::$sev, )* }
            }

            /// A short name of the problem.
            pub fn title(self) -> &'static str {
                match self { $( Code::$name => $title, )* }
            }

            /// A longer explanation with the usual fix.
            pub fn explanation(self) -> &'static str {
                match self { $( Code::$name => $explain, )* }
            }

            pub fn lookup(s: &str) -> Option<Code> {
                Code::ALL.iter().copied().find(|c| c.as_str().eq_ignore_ascii_case(s))
            }
        }
    };
}

codes! {
    Syntax = "E0001", Error, "syntax error",
        "The text does not follow the grammar of a `.phx` file. The caret points at the first token that could not be read; the message lists what was expected there.";
    InvalidUtf8 = "E0002", Error, "file is not valid UTF-8",
        "Flow files must be UTF-8 text. Re-encode the file.";
    ImportFailed = "E0003", Error, "import cannot be loaded",
        "An `import \"path.phx\"` names a file that cannot be read. Paths are relative to the importing file.";
    TooDeep = "E0004", Error, "nesting too deep",
        "Expressions, types or brackets are nested deeper than Phoenix accepts (256 levels). Split the expression or simplify it.";
    InvalidLiteral = "E0005", Error, "invalid literal",
        "A number, string escape, duration or timestamp literal cannot be read: a number out of range, an unknown escape, or a timestamp that is not RFC 3339.";
    Duplicate = "E0010", Error, "duplicate definition",
        "Two declarations share a name. Sources, sinks and flows share one namespace; schemas have their own.";
    UndefinedStream = "E0011", Error, "undefined stream",
        "A pipeline reads from a name that is not a declared source or flow.";
    UndefinedSink = "E0012", Error, "undefined sink",
        "A pipeline or route arm writes to a name that is not a declared sink.";
    UndefinedType = "E0013", Error, "undefined schema or type",
        "A type is not one of `string`, `int`, `float`, `bool`, `timestamp`, `duration`, `list<T>`, a `{ ... }` record, or a declared schema.";
    WrongKind = "E0014", Error, "name used as the wrong kind of thing",
        "A sink was used where a stream is read, or a source or flow where a sink is written. Read a sink's failed events through `sink.errors`.";
    Cycle = "E0015", Error, "cycle in the flow graph",
        "Events would flow in a circle (a flow reading itself, or a sink's `.errors` fed back into the same sink). Flows must form a directed acyclic graph.";
    NoOutput = "E0016", Error, "stream produces no events",
        "A flow that ends in a sink, `drop` or a route has no output stream; read from the stream before its last stage instead.";
    AfterTerminal = "E0017", Error, "stage after the end of a pipeline",
        "A sink, `drop` or `route` ends a pipeline; nothing can follow it.";
    NoErrorsPort = "E0018", Error, "no `.errors` port",
        "Only sources and sinks have an `.errors` port.";
    UnknownField = "E0020", Error, "unknown field",
        "An expression names a field the schema does not declare. Fields that are not declared still pass through to sinks, but expressions can only use declared fields: add it to the schema.";
    NotARecord = "E0021", Error, "field access on a value that is not a record",
        "`a.b` needs `a` to be a record (`{ ... }`).";
    UnknownMetadata = "E0022", Error, "unknown metadata",
        "`@name` reads metadata the source connector attaches to each event; this connector does not provide that name.";
    TypeMismatch = "E0030", Error, "type mismatch",
        "An operator or clause got a value of the wrong type: `where` needs a bool, arithmetic needs numbers, `like` needs strings, comparisons need comparable types.";
    UnknownFunction = "E0031", Error, "unknown function",
        "The function is not in Phoenix's standard library. `phoenix functions` lists them.";
    WrongArity = "E0032", Error, "wrong number of arguments",
        "The function was called with too few or too many arguments.";
    WrongArgType = "E0033", Error, "wrong argument type",
        "An argument does not have a type the function accepts.";
    UnnamedSelect = "E0034", Error, "select item needs a name",
        "Only a field reference names itself; give computed items a name with `as`.";
    DuplicateField = "E0035", Error, "duplicate output field",
        "Two items of one `select` produce the same field name.";
    EnvMisuse = "E0036", Error, "misused env()",
        "`env(\"NAME\", default)` reads a setting when the flow starts; it takes string literals and is only allowed in option values.";
    UnknownConnector = "E0040", Error, "unknown connector",
        "The connector name is not in Phoenix's connector list. `phoenix connectors` lists them.";
    WrongRole = "E0041", Error, "connector cannot be used here",
        "Some connectors can only read (sources) or only write (sinks).";
    UnknownOption = "E0042", Error, "unknown option",
        "The connector (or `deploy` block) has no option of that name.";
    OptionType = "E0043", Error, "invalid option value",
        "The option's value has the wrong type or is not one of the allowed values.";
    MissingOption = "E0044", Error, "missing required option",
        "The connector needs this option; add it to the `{ ... }` block.";
    DuplicateOption = "E0045", Error, "option given twice",
        "Each option may appear once in a block.";
    ArmKind = "E0050", Error, "route arm does not fit the route",
        "`route ... by key` takes value arms (`'a' | 'b' => target`); a route without `by` takes `when <predicate> => target` arms.";
    ElseArm = "E0051", Error, "misplaced else arm",
        "A route has at most one `else` arm, and it comes last.";
    EmptyRoute = "E0052", Error, "route without arms",
        "A route needs at least one arm.";
    SinkSchema = "E0053", Error, "events do not satisfy the sink's schema",
        "A sink declared `as Schema` only accepts events with every required field of that schema, with compatible types.";
    MergeMismatch = "E0054", Error, "merged streams differ",
        "`merge(a, b)` reads streams of one schema: the same declared fields, each with the same type and optionality (`?`). Make them agree before merging, e.g. with a `flow` that `select`s the missing field (`select *, 'none' as coupon`) or `coalesce`s an optional one. Metadata (`@name`) need not agree: metadata only some streams have is optional (null) after the merge, and metadata whose types differ is left out.";
    BadTest = "E0060", Error, "invalid test statement",
        "`input` names a source and takes a JSON object, a string (a raw line), or an array of them; `expect` names a sink and takes an object or an array of objects.";
    DuplicateDeploy = "E0061", Error, "more than one deploy block",
        "A flow has at most one `deploy { ... }` block.";
    NoElse = "W0001", Warning, "route without else",
        "Events that match no arm of a route without `else` are dropped. Add `else => drop` to say that on purpose, or route them somewhere.";
    UnreachableArm = "W0002", Warning, "unreachable route arm",
        "In a first-match route, an arm after one that always matches (or that repeats an earlier value) never receives events.";
    DuplicateArm = "W0003", Warning, "duplicate route arm",
        "Two arms test the same condition.";
    UnusedSource = "W0004", Warning, "source feeds nothing",
        "Nothing reads this source; its events would be consumed and discarded.";
    UnusedFlow = "W0005", Warning, "flow feeds nothing",
        "Nothing reads this named flow's output.";
    UnusedSink = "W0006", Warning, "sink receives nothing",
        "No pipeline or route writes to this sink.";
    NullComparison = "W0007", Warning, "comparison with null",
        "In SQL logic `x = null` is never true (it is NULL). Use `x is null` or `x is not null`.";
    MergedTwice = "W0008", Warning, "stream merged twice",
        "A `merge` passes on every event of every stream it names, so a stream named twice has each of its events passed on twice. Name each stream once.";
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in a flow.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    /// Where the problem is, with a short label under the caret.
    pub primary: (Span, String),
    /// Related places (`first defined here`).
    pub secondary: Vec<(Span, String)>,
    pub help: Option<String>,
    pub notes: Vec<String>,
    /// Edits that resolve the problem, offered by editors as quick fixes.
    pub fixes: Vec<Fix>,
}

/// A change to the text that resolves a diagnostic (`did you mean` applied, a missing arm added).
#[derive(Debug, Clone, PartialEq)]
pub struct Fix {
    /// What the fix does, as an editor lists it: "replace with `amount`".
    pub title: String,
    /// Each span's text is replaced by the string; an empty span inserts.
    pub edits: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            primary: (span, String::new()),
            secondary: Vec::new(),
            help: None,
            notes: Vec::new(),
            fixes: Vec::new(),
        }
    }

    /// A quick fix for editors.
    pub fn fix(mut self, title: impl Into<String>, edits: Vec<(Span, String)>) -> Self {
        self.fixes.push(Fix { title: title.into(), edits });
        self
    }

    /// The help ``did you mean `name`?`` and the fix that writes `replacement` over `span`
    /// (`replacement` is `name` as it must be written there: quoted, or with its `@`).
    pub fn did_you_mean(self, span: Span, name: &str, replacement: String) -> Self {
        let title = format!("replace with `{replacement}`");
        self.help(format!("did you mean `{name}`?")).fix(title, vec![(span, replacement)])
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.primary.1 = label.into();
        self
    }

    pub fn secondary(mut self, span: Span, label: impl Into<String>) -> Self {
        self.secondary.push((span, label.into()));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }

    pub fn span(&self) -> Span {
        self.primary.0
    }

    fn to_codespan(&self) -> cs::Diagnostic<crate::span::FileId> {
        let severity = match self.severity() {
            Severity::Error => cs::Severity::Error,
            Severity::Warning => cs::Severity::Warning,
        };
        let mut labels =
            vec![cs::Label::primary(self.primary.0.file, self.primary.0.range()).with_message(&self.primary.1)];
        labels.extend(self.secondary.iter().map(|(s, m)| cs::Label::secondary(s.file, s.range()).with_message(m)));
        let mut notes: Vec<String> = self.help.iter().map(|h| format!("help: {h}")).collect();
        notes.extend(self.notes.iter().map(|n| format!("note: {n}")));
        cs::Diagnostic::new(severity)
            .with_code(self.code.as_str())
            .with_message(&self.message)
            .with_labels(labels)
            .with_notes(notes)
    }
}

/// Render diagnostics rustc-style. `color` adds ANSI colours (for terminals).
pub fn render(sources: &SourceMap, diagnostics: &[Diagnostic], color: bool) -> String {
    let mut out = termcolor::Buffer::no_color();
    if color {
        out = termcolor::Buffer::ansi();
    }
    let config = term::Config { chars: term::Chars::ascii(), ..term::Config::default() };
    for d in diagnostics {
        // Rendering into memory only fails on a span outside its file, which the parser never makes.
        let _ = term::emit(&mut out, &config, sources, &d.to_codespan());
    }
    String::from_utf8_lossy(out.as_slice()).into_owned()
}

/// How many errors and warnings there are, for the CLI's closing summary line.
pub fn summary(diagnostics: &[Diagnostic]) -> (usize, usize) {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    (errors, diagnostics.len() - errors)
}

/// The closest candidate to `name` by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| {
            let limit = (name.chars().count().max(c.chars().count()) / 3).max(1);
            *d <= limit
        })
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}
