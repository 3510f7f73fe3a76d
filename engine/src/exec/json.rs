//! What a valid event is, byte for byte, and the scanner that decides it.
//!
//! A payload is a valid event when it is exactly one JSON object as RFC 8259 defines it
//! (UTF-8; strings without raw control characters; escapes valid; numbers, commas and colons
//! where the grammar puts them; nothing but whitespace around the object), within the limits
//! Phoenix adds because downstream consumers choke on them:
//! - a `\u` escape of a lone surrogate (`\ud800` without its pair) is invalid: it encodes no
//!   character and cannot be written as UTF-8;
//! - a number whose magnitude rounds beyond the largest 64-bit float (`1e400`) is invalid,
//!   wherever it appears (most consumers read every number as a double); an integer beyond
//!   the 64-bit range is valid JSON but fails an `int` field;
//! - an object may not repeat a key, at any depth (which value counts differs between
//!   consumers, and Elasticsearch rejects the document);
//! - objects and arrays nest at most [`MAX_DEPTH`] levels deep.
//!
//! [`check_event`] validates a payload in one pass without building anything: the general
//! decoder runs it before arrow-json (whose tape decoder is lenient about commas, control
//! characters and numbers). The flat decoder is made of the same [`Cursor`], so both paths
//! accept exactly the same bytes.

use phoenix_dsl::types::{Record, Ty};
use std::fmt;

/// How deep objects and arrays may nest (the outermost object is level 1). The same limit as
/// serde_json's, so a strict serde_json parser accepts whatever Phoenix writes.
pub const MAX_DEPTH: usize = 127;

/// Where a payload stops being a valid event, and why. Small and `Copy`, so the happy path
/// carries no strings: [`Invalid::reason`] reads the details back from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid {
    /// Byte offset in the payload, from 0.
    pub at: usize,
    pub problem: Problem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Empty,
    /// A valid JSON value that is not an object: what it is instead.
    NotObject(&'static str),
    End,
    ExpectedKey,
    ExpectedColon,
    /// Expected `,` or this closing bracket.
    ExpectedCommaOr(u8),
    ExpectedValue,
    Trailing,
    ControlCharacter(u8),
    BadEscape,
    LoneSurrogate,
    BadUtf8,
    BadNumber,
    NumberOutOfRange,
    TooDeep,
    /// The key at `at` repeats one before it in its object.
    DuplicateKey,
    /// The number at `at`, of the declared field whose key starts at `key`, would not convert
    /// exactly to its type (`ty`).
    NotWhole {
        key: usize,
        ty: &'static str,
    },
}

impl Invalid {
    /// What was wrong with `payload` (the payload this was found in), for a dead letter.
    pub fn reason(&self, payload: &[u8]) -> String {
        let at = self.at;
        match self.problem {
            Problem::Empty => "empty payload: expected a JSON object".into(),
            Problem::NotObject(kind) => format!("expected a JSON object, got {kind}"),
            Problem::NotWhole { key, ty } => {
                let number = Cursor::new(payload.get(at..).unwrap_or_default())
                    .number()
                    .map_or("?", |(n, _)| std::str::from_utf8(n).unwrap_or("?"));
                format!(
                    "at byte {at}: `{}` is {ty}, and {number} is not a whole number that fits in 64 bits",
                    key_text(payload, key)
                )
            }
            Problem::DuplicateKey => format!("invalid JSON at byte {at}: duplicate key {:?}", key_text(payload, at)),
            p => format!("invalid JSON at byte {at}: {p}"),
        }
    }
}

/// The (valid) key whose opening quote is at `at`, unescaped, shortened for a message.
fn key_text(payload: &[u8], at: usize) -> String {
    let mut c = Cursor::new(payload);
    c.i = at;
    let text = match c.string(true) {
        Ok(s) => serde_json::from_slice::<String>(&payload[at..c.i])
            .unwrap_or_else(|_| String::from_utf8_lossy(s.text).into_owned()),
        Err(_) => return "?".into(),
    };
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => write!(f, "empty payload"),
            Problem::NotObject(kind) => write!(f, "{kind} where an object was expected"),
            Problem::End => write!(f, "the text ends before the object does"),
            Problem::ExpectedKey => write!(f, "expected a key (a string in double quotes)"),
            Problem::ExpectedColon => write!(f, "expected `:` after the key"),
            Problem::ExpectedCommaOr(close) => write!(f, "expected `,` or `{}`", char::from(*close)),
            Problem::ExpectedValue => write!(f, "expected a value"),
            Problem::Trailing => write!(f, "more text after the object (one event per payload)"),
            Problem::ControlCharacter(c) => {
                write!(f, "raw control character U+{c:04X} in a string (it must be escaped)")
            }
            Problem::BadEscape => write!(f, "invalid escape in a string"),
            Problem::LoneSurrogate => write!(f, "a \\u escape of a lone surrogate (encodes no character)"),
            Problem::BadUtf8 => write!(f, "not UTF-8"),
            Problem::BadNumber => write!(f, "malformed number"),
            Problem::NumberOutOfRange => write!(f, "number beyond the range of a 64-bit float"),
            Problem::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels"),
            Problem::DuplicateKey => write!(f, "duplicate key"),
            Problem::NotWhole { ty, .. } => write!(f, "not a whole number that fits in 64 bits ({ty})"),
        }
    }
}

/// Check that `payload` is a valid event (see the module docs) whose declared numbers convert
/// exactly ([`Shape`]). `keys` is scratch space, reused across payloads to save allocations.
pub fn check_event(payload: &[u8], keys: &mut Keys, shape: &Shape) -> Result<(), Invalid> {
    let mut c = Cursor::new(payload);
    keys.reset();
    c.ws();
    match c.peek() {
        None => return Err(Invalid { at: 0, problem: Problem::Empty }),
        Some(b'{') => {
            c.i += 1;
            c.ws();
            c.members(keys, 1, Some(shape))?;
        }
        Some(_) => {
            // Say what it is when it is valid JSON, else where it breaks.
            let kind = match c.peek() {
                Some(b'[') => "an array",
                Some(b'"') => "a string",
                Some(b't' | b'f') => "a bool",
                Some(b'n') => "null",
                _ => "a number",
            };
            c.value(keys, 0)?;
            c.ws();
            c.end()?;
            return Err(Invalid { at: 0, problem: Problem::NotObject(kind) });
        }
    }
    c.ws();
    c.end()
}

/// A string as it appears between its quotes.
#[derive(Debug, Clone, Copy)]
pub struct Str<'a> {
    pub text: &'a [u8],
    /// Holds at least one escape (so `text` is not the string's value).
    pub escaped: bool,
}

/// A cursor over one payload. Every method checks what it reads and fails with the offset of
/// the first byte that is wrong.
#[derive(Debug)]
pub struct Cursor<'a> {
    pub b: &'a [u8],
    pub i: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b, i: 0 }
    }

    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    pub fn fail<T>(&self, at: usize, problem: Problem) -> Result<T, Invalid> {
        Err(Invalid { at, problem })
    }

    /// The problem at the cursor: the text ended, or `problem`.
    fn here<T>(&self, problem: Problem) -> Result<T, Invalid> {
        if self.i >= self.b.len() { self.fail(self.b.len(), Problem::End) } else { self.fail(self.i, problem) }
    }

    #[inline]
    pub fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// Consume `c` (`{` or `:`), or fail saying what was expected.
    #[inline]
    pub fn eat(&mut self, c: u8) -> Result<(), Invalid> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.here(if c == b':' { Problem::ExpectedColon } else { Problem::ExpectedValue })
        }
    }

    /// Nothing may follow.
    pub fn end(&self) -> Result<(), Invalid> {
        if self.i == self.b.len() { Ok(()) } else { self.fail(self.i, Problem::Trailing) }
    }

    /// After a member or element: `,` (then whitespace), or the closing bracket (`Ok(true)`).
    #[inline]
    pub fn comma_or(&mut self, close: u8) -> Result<bool, Invalid> {
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                self.ws();
                Ok(false)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(true)
            }
            _ => self.here(Problem::ExpectedCommaOr(close)),
        }
    }

    /// `true`, `false` or `null` (the cursor is on its first letter); which one it was.
    pub fn literal(&mut self) -> Result<Option<bool>, Invalid> {
        let (lit, value): (&[u8], _) = match self.peek() {
            Some(b't') => (b"true", Some(true)),
            Some(b'f') => (b"false", Some(false)),
            _ => (b"null", None),
        };
        let end = self.i + lit.len();
        if self.b.get(self.i..end) == Some(lit) {
            self.i = end;
            return Ok(value);
        }
        if self.b.len() < end && self.b[self.i..].iter().zip(lit).all(|(a, b)| a == b) {
            return self.fail(self.b.len(), Problem::End);
        }
        self.fail(self.i, Problem::ExpectedValue)
    }

    /// A JSON number: its text and whether it is an integer (no fraction, no exponent). Fails
    /// on anything the grammar forbids, and on a magnitude no 64-bit float can hold.
    pub fn number(&mut self) -> Result<(&'a [u8], bool), Invalid> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.i += 1;
                self.digits();
            }
            _ => return self.here(Problem::BadNumber),
        }
        let int_len = self.i - start;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            integer = false;
            self.digit()?;
            self.digits();
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            integer = false;
            exponent = true;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digit()?;
            self.digits();
        }
        let text = &self.b[start..self.i];
        // Only an exponent or over 300 integer digits can reach f64::MAX (1.8e308).
        if (exponent || int_len > 300) && !lexical_core::parse::<f64>(text).is_ok_and(f64::is_finite) {
            return self.fail(start, Problem::NumberOutOfRange);
        }
        Ok((text, integer))
    }

    fn digit(&mut self) -> Result<(), Invalid> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.i += 1;
                Ok(())
            }
            _ => self.here(Problem::BadNumber),
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    /// A string (the cursor is on its opening quote), every escape checked. Its UTF-8 is
    /// checked too when `utf8`; a caller that checks a whole column of values at once passes
    /// `false`.
    #[inline]
    pub fn string(&mut self, utf8: bool) -> Result<Str<'a>, Invalid> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        // The high bits of every byte passed: any set means the text is not ASCII.
        let mut high = 0u64;
        loop {
            // Eight bytes at a time, straight to the first special one.
            while let Some(chunk) = self.b.get(self.i..self.i + 8) {
                let w = word(chunk);
                let m = special_mask(w);
                if m == 0 {
                    high |= w;
                    self.i += 8;
                    continue;
                }
                let k = (m.trailing_zeros() / 8) as usize;
                high |= w & ((1u64 << (8 * k)) - 1);
                self.i += k;
                break;
            }
            // A special byte, or one of the last seven of the payload.
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                Some(c @ 0..=0x1f) => return self.fail(self.i, Problem::ControlCharacter(c)),
                Some(c) => {
                    high |= u64::from(c);
                    self.i += 1;
                }
                None => return self.fail(self.b.len(), Problem::End),
            }
        }
        let text = &self.b[start..self.i];
        self.i += 1;
        if utf8
            && high & HIGH != 0
            && let Err(e) = std::str::from_utf8(text)
        {
            return self.fail(start + e.valid_up_to(), Problem::BadUtf8);
        }
        Ok(Str { text, escaped })
    }

    /// One escape (the cursor is on its backslash).
    fn escape(&mut self) -> Result<(), Invalid> {
        let at = self.i;
        match self.b.get(at + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
            Some(b'u') => {
                let unit = self.hex4(at + 2)?;
                self.i = at + 6;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by the escape of a low one.
                        let low = if self.b.get(self.i..self.i + 2) == Some(b"\\u") {
                            self.hex4(self.i + 2).ok()
                        } else {
                            None
                        };
                        match low {
                            Some(0xDC00..=0xDFFF) => self.i += 6,
                            _ => return self.fail(at, Problem::LoneSurrogate),
                        }
                    }
                    0xDC00..=0xDFFF => return self.fail(at, Problem::LoneSurrogate),
                    _ => {}
                }
            }
            Some(_) => return self.fail(at, Problem::BadEscape),
            None => return self.fail(self.b.len(), Problem::End),
        }
        Ok(())
    }

    fn hex4(&self, at: usize) -> Result<u16, Invalid> {
        let mut unit = 0u16;
        for k in 0..4 {
            let d = match self.b.get(at + k) {
                Some(&c) => (c as char).to_digit(16),
                None => return self.fail(self.b.len(), Problem::End),
            };
            match d {
                Some(d) => unit = unit << 4 | d as u16,
                None => return self.fail(at - 2, Problem::BadEscape),
            }
        }
        Ok(unit)
    }

    /// Step over any value, checking it; `depth` is the nesting level of the value's container.
    pub fn value(&mut self, keys: &mut Keys, depth: usize) -> Result<(), Invalid> {
        self.value_in(keys, depth, None, 0)
    }

    /// [`Cursor::value`] of a declared field (its key's quote at `key`) with a `rule` for its
    /// numbers.
    fn value_in(&mut self, keys: &mut Keys, depth: usize, rule: Option<&Rule>, key: usize) -> Result<(), Invalid> {
        match self.peek() {
            Some(b'"') => self.string(true).map(drop),
            Some(b'-' | b'0'..=b'9') => {
                let at = self.i;
                let (number, integer) = self.number()?;
                match rule {
                    Some(&Rule::Whole(ty)) if !whole(number, integer) => self.fail(at, Problem::NotWhole { key, ty }),
                    _ => Ok(()),
                }
            }
            Some(b't' | b'f' | b'n') => self.literal().map(drop),
            Some(open @ (b'{' | b'[')) => {
                if depth >= MAX_DEPTH {
                    return self.fail(self.i, Problem::TooDeep);
                }
                self.i += 1;
                self.ws();
                match (open, rule) {
                    (b'{', Some(Rule::Record(shape))) => self.members(keys, depth + 1, Some(shape)),
                    (b'{', _) => self.members(keys, depth + 1, None),
                    (_, Some(Rule::List(inner))) => self.elements(keys, depth + 1, Some(inner), key),
                    _ => self.elements(keys, depth + 1, None, key),
                }
            }
            _ => self.here(Problem::ExpectedValue),
        }
    }

    /// The members of an object, after its `{` and whitespace; `shape` is its declared fields.
    fn members(&mut self, keys: &mut Keys, depth: usize, shape: Option<&Shape>) -> Result<(), Invalid> {
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        let frame = keys.open();
        loop {
            if self.peek() != Some(b'"') {
                return self.here(Problem::ExpectedKey);
            }
            let at = self.i;
            let key = self.string(true)?;
            keys.insert(self.b, frame, at, key)?;
            let rule = match shape {
                Some(s) if key.escaped => s.rule(keys.last(self.b)),
                Some(s) => s.rule(key.text),
                None => None,
            };
            self.ws();
            self.eat(b':')?;
            self.ws();
            self.value_in(keys, depth, rule, at)?;
            self.ws();
            if self.comma_or(b'}')? {
                return keys.close(self.b, frame);
            }
        }
    }

    /// The elements of an array, after its `[` and whitespace; `rule` is its declared
    /// elements' (of the field whose key is at `key`).
    fn elements(&mut self, keys: &mut Keys, depth: usize, rule: Option<&Rule>, key: usize) -> Result<(), Invalid> {
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.value_in(keys, depth, rule, key)?;
            self.ws();
            if self.comma_or(b']')? {
                return Ok(());
            }
        }
    }
}

/// Where a schema's fields would take a number inexactly. arrow-json truncates a fraction in an
/// `int` field (`1.5` becomes 1) and saturates a `timestamp` given as nanoseconds beyond 64 bits
/// (to the year 2262): the validator refuses such numbers instead of letting them change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shape {
    fields: Vec<(String, Rule)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    /// A whole number within 64 bits, for a field of this type.
    Whole(&'static str),
    Record(Shape),
    List(Box<Rule>),
}

impl Shape {
    pub fn of(record: &Record) -> Shape {
        Shape { fields: record.fields.iter().filter_map(|f| Some((f.name.clone(), Rule::of(&f.ty)?))).collect() }
    }

    #[inline]
    fn rule(&self, key: &[u8]) -> Option<&Rule> {
        self.fields.iter().find(|(name, _)| same(name.as_bytes(), key)).map(|(_, r)| r)
    }
}

impl Rule {
    fn of(ty: &Ty) -> Option<Rule> {
        match ty {
            Ty::Int => Some(Rule::Whole("an int")),
            Ty::Timestamp => Some(Rule::Whole("a timestamp")),
            Ty::Record(r) => Some(Shape::of(r)).filter(|s| !s.fields.is_empty()).map(Rule::Record),
            Ty::List(t) => Rule::of(t).map(|r| Rule::List(Box::new(r))),
            _ => None,
        }
    }
}

/// Whether a number converts exactly to a 64-bit integer: an integer literal in range, or a
/// fraction or exponent form of one (`1.0`, `1e2`).
fn whole(number: &[u8], integer: bool) -> bool {
    if integer {
        return lexical_core::parse::<i64>(number).is_ok();
    }
    // 2^63 is exact in f64; anything in [-2^63, 2^63) without a fraction fits.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    lexical_core::parse::<f64>(number).is_ok_and(|v| v.fract() == 0.0 && (-TWO_63..TWO_63).contains(&v))
}

/// The keys of the objects being read, to find a repeated one. Objects are checked key by key
/// while small; a large one is sorted once when it closes, so a payload with thousands of keys
/// costs `n log n`, not `n²`.
#[derive(Debug, Default)]
pub struct Keys {
    /// Per key, its [`tag`]: a small object's keys are compared by tag first, a word each.
    tags: Vec<u64>,
    keys: Vec<Key>,
    /// Unescaped text of keys written with escapes (`"\u0061"` repeats `"a"`).
    unescaped: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Key {
    /// Offset of the key's opening quote in the payload.
    at: usize,
    /// The key's text: in the payload, or in `unescaped`.
    start: usize,
    end: usize,
    in_unescaped: bool,
}

/// Up to this many keys an object is checked as each key arrives.
const LINEAR: usize = 16;

impl Keys {
    /// Forget every key (a new payload).
    pub fn reset(&mut self) {
        self.tags.clear();
        self.keys.clear();
        self.unescaped.clear();
    }

    /// Start an object; its keys are those from the returned frame on.
    pub fn open(&self) -> usize {
        self.keys.len()
    }

    /// The text of the key inserted last (unescaped).
    fn last<'s>(&'s self, payload: &'s [u8]) -> &'s [u8] {
        self.keys.last().map_or(&[], |k| self.text(payload, k))
    }

    fn text<'s>(&'s self, payload: &'s [u8], k: &Key) -> &'s [u8] {
        let source = if k.in_unescaped { &self.unescaped } else { payload };
        &source[k.start..k.end]
    }

    /// Add a key (its quote at `at`) of the object that starts at `frame`; a key the object
    /// already has is an error.
    #[inline]
    pub fn insert(&mut self, payload: &[u8], frame: usize, at: usize, key: Str) -> Result<(), Invalid> {
        let (k, tag) = if key.escaped {
            // Valid already: the cursor checked every escape.
            let text = serde_json::from_slice::<String>(&payload[at..at + key.text.len() + 2]).unwrap_or_default();
            let start = self.unescaped.len();
            self.unescaped.extend_from_slice(text.as_bytes());
            let end = self.unescaped.len();
            (Key { at, start, end, in_unescaped: true }, tag(&self.unescaped, start, end))
        } else {
            let (start, end) = (at + 1, at + 1 + key.text.len());
            (Key { at, start, end, in_unescaped: false }, tag(payload, start, end))
        };
        if self.tags.len() - frame < LINEAR {
            for (i, &t) in self.tags[frame..].iter().enumerate() {
                if t == tag && self.text(payload, &self.keys[frame + i]) == self.text(payload, &k) {
                    return Err(Invalid { at, problem: Problem::DuplicateKey });
                }
            }
        }
        self.tags.push(tag);
        self.keys.push(k);
        Ok(())
    }

    /// End the object that started at `frame`: check a large one, forget its keys.
    pub fn close(&mut self, payload: &[u8], frame: usize) -> Result<(), Invalid> {
        if self.keys.len() - frame > LINEAR {
            let (keys, unescaped) = (&mut self.keys[frame..], &self.unescaped);
            let text = |k: &Key| {
                let source = if k.in_unescaped { unescaped.as_slice() } else { payload };
                &source[k.start..k.end]
            };
            keys.sort_unstable_by(|a, b| text(a).cmp(text(b)).then(a.at.cmp(&b.at)));
            // The repeat that comes first in the payload.
            let first = keys.windows(2).filter(|w| text(&w[0]) == text(&w[1])).map(|w| w[1]).min_by_key(|k| k.at);
            if let Some(k) = first {
                return Err(Invalid { at: k.at, problem: Problem::DuplicateKey });
            }
        }
        self.tags.truncate(frame);
        self.keys.truncate(frame);
        Ok(())
    }
}

/// A word that equal texts share: the first eight bytes of `source[start..end]` (zero-padded),
/// with the length in the top byte. Loaded straight from `source` when eight bytes are there.
#[inline]
fn tag(source: &[u8], start: usize, end: usize) -> u64 {
    let len = end - start;
    let head = match source.get(start..start + 8) {
        Some(w) if len >= 8 => word(w),
        Some(w) => word(w) & ((1u64 << (8 * len)) - 1),
        None => {
            let mut w = [0u8; 8];
            w[..len].copy_from_slice(&source[start..end]);
            u64::from_le_bytes(w)
        }
    };
    head ^ ((len as u64) << 56)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Byte equality, a word at a time. Names are short: this beats a call to memcmp.
#[inline]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a, b);
    while x.len() >= 8 {
        let ((xh, xt), (yh, yt)) = (x.split_at(8), y.split_at(8));
        if word(xh) != word(yh) {
            return false;
        }
        (x, y) = (xt, yt);
    }
    x.iter().zip(y).all(|(p, q)| p == q)
}

/// Eight bytes as one word (`s` is at least eight long; the rest is ignored).
#[inline]
pub fn word(s: &[u8]) -> u64 {
    u64::from_le_bytes(s.get(..8).and_then(|w| w.try_into().ok()).unwrap_or([0; 8]))
}

/// The bytes of `w` that are `"`, `\` or a control character, as their high bits. The lowest
/// one set is exact (a borrow of the zero-byte test only reaches bytes above one that really
/// matched), so `trailing_zeros() / 8` is the first special byte.
#[inline]
pub fn special_mask(w: u64) -> u64 {
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero_byte(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    quote | backslash | control
}

/// Whether any byte of `w` is `"`, `\` or a control character.
#[inline]
pub fn special(w: u64) -> bool {
    special_mask(w) != 0
}

/// [`special`], or any byte is not ASCII.
#[inline]
pub fn needs_look(w: u64) -> bool {
    special(w) || w & HIGH != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &[u8]) -> Result<(), Invalid> {
        check_event(s, &mut Keys::default(), &Shape::default())
    }

    fn problem(s: &[u8]) -> (usize, Problem) {
        let e = check(s).expect_err(&String::from_utf8_lossy(s));
        (e.at, e.problem)
    }

    fn reason(s: &[u8]) -> String {
        check(s).expect_err(&String::from_utf8_lossy(s)).reason(s)
    }

    #[test]
    fn accepts_valid_objects() {
        for s in [
            &br#"{}"#[..],
            br#" {"a":1} "#,
            b"\t{\r\n\"a\" :\n[ 1 , -0.5e+3, 0, -0, 1E2, true, false, null, {}, [], \"\" ] }\n",
            br#"{"s":"caf\u00e9 \ud83d\ude00 \" \\ \/ \b \f \n \r \t", "e":"\u00e9t\u00e9"}"#,
            "{\"k\u{e9}y\":\"val\u{fc}e \u{1F600}\", \"del\":\"\u{7f}\"}".as_bytes(),
            br#"{"big":123456789012345678901234567890, "small":1e-400, "max":1.7976931348623157e308}"#,
            br#"{"a":{"a":{"a":1}}, "b":[{"a":1},{"a":1}]}"#,
            br#"{"\u0061":1, "b":2}"#,
        ] {
            assert_eq!(check(s), Ok(()), "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn rejects_with_offset_and_reason() {
        use Problem::*;
        let cases: &[(&[u8], usize, Problem)] = &[
            (b"", 0, Empty),
            (b"  \n", 0, Empty),
            (b"[1]", 0, NotObject("an array")),
            (b"\"x\"", 0, NotObject("a string")),
            (b"12", 0, NotObject("a number")),
            (b"null", 0, NotObject("null")),
            (br#"{"a":1"#, 6, End),
            (br#"{"a":1 "b":2}"#, 7, ExpectedCommaOr(b'}')),
            (br#"{"a":1,,"b":2}"#, 7, ExpectedKey),
            (br#"{"a":1,}"#, 7, ExpectedKey),
            (br#"{"a" 1}"#, 5, ExpectedColon),
            (br#"{"a":}"#, 5, ExpectedValue),
            (br#"{"a":[1,]}"#, 8, ExpectedValue),
            (br#"{"a":[1 2]}"#, 8, ExpectedCommaOr(b']')),
            (br#"{"a":1} x"#, 8, Trailing),
            (br#"{"a":1}{"b":2}"#, 7, Trailing),
            (b"{\"a\":\"x\x00y\"}", 7, ControlCharacter(0)),
            (b"{\"a\":\"x\ty\"}", 7, ControlCharacter(9)),
            (b"{\"a\x1f\":1}", 3, ControlCharacter(0x1f)),
            (br#"{"a":"\x"}"#, 6, BadEscape),
            (br#"{"a":"\u12g4"}"#, 6, BadEscape),
            (br#"{"a":"\ud800"}"#, 6, LoneSurrogate),
            (br#"{"a":"\ud800\u0041"}"#, 6, LoneSurrogate),
            (br#"{"a":"\udc00\ud800"}"#, 6, LoneSurrogate),
            (b"{\"a\":\"\xff\"}", 6, BadUtf8),
            (b"{\"a\":\"ok \xe2\x82\"}", 9, BadUtf8),
            (b"{\"\xc3\":1}", 2, BadUtf8),
            (br#"{"a":01}"#, 6, ExpectedCommaOr(b'}')),
            (br#"{"a":1.}"#, 7, BadNumber),
            (br#"{"a":-}"#, 6, BadNumber),
            (br#"{"a":1e}"#, 7, BadNumber),
            (br#"{"a":+1}"#, 5, ExpectedValue),
            (br#"{"a":.5}"#, 5, ExpectedValue),
            (br#"{"a":1e99967.18}"#, 5, NumberOutOfRange),
            (br#"{"a":-1e309}"#, 5, NumberOutOfRange),
            (br#"{"a":tru}"#, 5, ExpectedValue),
            (br#"{"a":nul"#, 8, End),
            (br#"{"a":NaN}"#, 5, ExpectedValue),
            (br#"{"a":1,"b":2,"a":3}"#, 13, DuplicateKey),
            (br#"{"a":1,"\u0061":3}"#, 7, DuplicateKey),
            (br#"{"x":{"a":1,"a":1}}"#, 12, DuplicateKey),
            (b"{'a':1}", 1, ExpectedKey),
        ];
        for (s, at, p) in cases {
            assert_eq!(problem(s), (*at, *p), "{}", String::from_utf8_lossy(s));
        }
        assert_eq!(reason(br#"{"a":1,"\u0061":3}"#), r#"invalid JSON at byte 7: duplicate key "a""#);
        assert_eq!(
            reason(b"{\"a\":\"x\ty\"}"),
            "invalid JSON at byte 7: raw control character U+0009 in a string (it must be escaped)"
        );
        assert_eq!(reason(b" "), "empty payload: expected a JSON object");
        assert_eq!(reason(b"[1]"), "expected a JSON object, got an array");
    }

    #[test]
    fn keys_of_sibling_and_nested_objects_are_separate() {
        assert_eq!(check(br#"{"a":{"a":1,"b":{"a":2}},"b":[{"a":1,"b":2},{"a":1}]}"#), Ok(()));
    }

    #[test]
    fn large_objects_find_the_first_repeat() {
        let mut s = String::from("{");
        for i in 0..1000 {
            s.push_str(&format!("\"k{i}\":{i},"));
        }
        s.push_str("\"k17\":0,\"k5\":0}");
        let at = s.find("\"k17\":0,").unwrap();
        assert_eq!(problem(s.as_bytes()), (at, Problem::DuplicateKey));
        assert_eq!(reason(s.as_bytes()), format!("invalid JSON at byte {at}: duplicate key \"k17\""));
        // Without the repeats it is valid.
        let ok = s.replace(",\"k17\":0,\"k5\":0}", "}");
        assert_eq!(check(ok.as_bytes()), Ok(()));
    }

    #[test]
    fn nesting_limit_matches_serde_json() {
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1] {
            let s = format!("{{\"a\":{}1{}}}", "[".repeat(depth - 1), "]".repeat(depth - 1));
            let ours = check(s.as_bytes()).is_ok();
            let serde = serde_json::from_str::<serde_json::Value>(&s).is_ok();
            assert_eq!(ours, serde, "depth {depth}");
            assert_eq!(ours, depth <= MAX_DEPTH, "depth {depth}");
        }
    }

    #[test]
    fn declared_numbers_must_convert_exactly() {
        use phoenix_dsl::types::RecordField;
        let f = |name: &str, ty: Ty| RecordField { name: name.into(), ty, optional: true };
        let line = Record { fields: vec![f("qty", Ty::Int), f("price", Ty::Float)] };
        let record = Record {
            fields: vec![
                f("n", Ty::Int),
                f("ts", Ty::Timestamp),
                f("x", Ty::Float),
                f("lines", Ty::List(Box::new(Ty::Record(std::sync::Arc::new(line))))),
            ],
        };
        let shape = Shape::of(&record);
        let check = |s: &str| check_event(s.as_bytes(), &mut Keys::default(), &shape);
        for ok in [
            r#"{"n":1,"ts":0,"x":1.5}"#,
            r#"{"n":1.0,"ts":1e3,"x":1e300}"#,
            r#"{"n":-9223372036854775808,"ts":9223372036854775807}"#,
            r#"{"n":"1.5","undeclared":1.5,"lines":[{"qty":2,"price":9.99},{"qty":1e1}]}"#,
            r#"{"lines":{"qty":1.5},"x":{"n":1.5}}"#,
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for (bad, at, said) in [
            (r#"{"n":1.5}"#, 5, "`n` is an int, and 1.5 is"),
            (r#"{"n":9223372036854775808}"#, 5, "`n` is an int, and 9223372036854775808 is"),
            (r#"{"n":9.3e18}"#, 5, "`n` is an int, and 9.3e18 is"),
            (r#"{"\u006e":1.5}"#, 10, "`n` is an int, and 1.5 is"),
            (r#"{"ts":99999999999999999999}"#, 6, "`ts` is a timestamp, and 99999999999999999999 is"),
            (r#"{"ts":1.5}"#, 6, "`ts` is a timestamp, and 1.5 is"),
            (r#"{"lines":[{"qty":1},{"qty":0.5}]}"#, 27, "`qty` is an int, and 0.5 is"),
        ] {
            let e = check(bad).expect_err(bad);
            assert_eq!(e.at, at, "{bad}");
            assert!(matches!(e.problem, Problem::NotWhole { .. }), "{e:?}");
            assert!(
                e.reason(bad.as_bytes()).starts_with(&format!("at byte {at}: {said}")),
                "{}",
                e.reason(bad.as_bytes())
            );
        }
        assert_eq!(
            check(r#"{"n":1.5}"#).unwrap_err().reason(br#"{"n":1.5}"#),
            "at byte 5: `n` is an int, and 1.5 is not a whole number that fits in 64 bits"
        );
    }

    /// Why the general path validates before arrow-json: its tape decoder (59, strict mode or
    /// not) accepts all of these, and converts some lossily. If an upgrade makes it strict,
    /// this test says so and the separate pass can go.
    #[test]
    fn arrow_json_lets_through_what_the_validator_refuses() {
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let decode = |ty: DataType, doc: &str| -> Option<String> {
            let schema = std::sync::Arc::new(Schema::new(vec![Field::new("v", ty, true)]));
            let mut d = arrow::json::ReaderBuilder::new(schema).with_strict_mode(false).build_decoder().ok()?;
            d.decode(doc.as_bytes()).ok()?;
            let b = d.flush().ok()??;
            arrow::util::display::array_value_to_string(b.column(0), 0).ok()
        };
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        for (ty, doc, arrow_says) in [
            (DataType::Int64, r#"{"v":1 "w":2}"#, "1"),
            (DataType::Int64, r#"{"v":1,,"w":2}"#, "1"),
            (DataType::Int64, r#"{"v":1,}"#, "1"),
            (DataType::Int64, "{\"v\":1,\"w\":\"a\u{0}b\"}", "1"),
            (DataType::Int64, r#"{"v":1,"w":1e99967.18}"#, "1"),
            (DataType::Int64, r#"{"v":1,"w":[1 2]}"#, "1"),
            (DataType::Int64, r#"{"v":1,"v":2}"#, "2"),
            (DataType::Int64, r#"{"v":1.5}"#, "1"),
            (DataType::Float64, r#"{"v":1e400}"#, "inf"),
            (ts, r#"{"v":99999999999999999999}"#, "2262-04-11T23:47:16.854775807Z"),
        ] {
            assert_eq!(decode(ty.clone(), doc).as_deref(), Some(arrow_says), "{doc}");
            let record = Record {
                fields: vec![phoenix_dsl::types::RecordField {
                    name: "v".into(),
                    ty: match ty {
                        DataType::Int64 => Ty::Int,
                        DataType::Float64 => Ty::Float,
                        _ => Ty::Timestamp,
                    },
                    optional: true,
                }],
            };
            assert!(check_event(doc.as_bytes(), &mut Keys::default(), &Shape::of(&record)).is_err(), "{doc}");
        }
    }

    #[test]
    fn special_mask_points_at_the_first_special_byte() {
        let mut rng = fastrand::Rng::with_seed(8);
        for _ in 0..20_000 {
            let mut w: [u8; 8] = std::array::from_fn(|_| rng.u8(0x20..=0xff));
            for b in &mut w {
                if *b == b'"' || *b == b'\\' {
                    *b = b'a';
                }
            }
            let first = rng.usize(..8);
            w[first] = [b'"', b'\\', 0, 0x1f, b'\n'][rng.usize(..5)];
            // More special bytes above the first one may follow.
            for b in &mut w[first + 1..] {
                if rng.u8(..4) == 0 {
                    *b = [b'"', b'\\', 0, 0x01][rng.usize(..4)];
                }
            }
            let m = special_mask(u64::from_le_bytes(w));
            assert_eq!((m.trailing_zeros() / 8) as usize, first, "{w:?}");
        }
        assert_eq!(special_mask(u64::from_le_bytes(*b"plain \x7f\xff")), 0);
    }

    #[test]
    fn special_bytes_are_found_at_every_position() {
        for at in 0..20 {
            for c in [b'"', b'\\', 0u8, 0x1f, b'\t'] {
                let mut s = vec![b'a'; 20];
                s[at] = c;
                let doc = [&b"{\"k\":\""[..], &s, b"\"}"].concat();
                let expect = serde_json::from_slice::<serde_json::Value>(&doc).is_ok();
                assert_eq!(check(&doc).is_ok(), expect, "byte {c:#x} at {at}");
            }
        }
    }
}
