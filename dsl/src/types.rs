//! Phoenix types and their Arrow counterparts.

use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use std::fmt;
use std::sync::Arc;

/// The type of a value. Whether it may be null is tracked beside it (see [`Field::optional`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    String,
    Int,
    Float,
    Bool,
    /// Nanoseconds since the epoch, UTC.
    Timestamp,
    /// Nanoseconds.
    Duration,
    List(Box<Ty>),
    Record(Arc<Record>),
    /// The type of the literal `null`: fits anywhere.
    Null,
    /// An expression that already produced an error; fits anywhere so errors do not cascade.
    Error,
}

/// A record type: named fields in declaration order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub fields: Vec<RecordField>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordField {
    pub name: String,
    pub ty: Ty,
    /// Declared with `?`: may be absent or null.
    pub optional: bool,
}

impl Record {
    pub fn field(&self, name: &str) -> Option<&RecordField> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.name.as_str())
    }

    pub fn arrow_fields(&self) -> Fields {
        self.fields.iter().map(|f| Field::new(&f.name, f.ty.to_arrow(), f.optional)).collect()
    }
}

impl Ty {
    pub fn is_numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Float | Ty::Null | Ty::Error)
    }

    /// True for `Null` and `Error`, which fit where any type is expected.
    pub fn is_wild(&self) -> bool {
        matches!(self, Ty::Null | Ty::Error)
    }

    /// Can a value of `self` be used where `want` is expected (with implicit int→float widening)?
    pub fn fits(&self, want: &Ty) -> bool {
        match (self, want) {
            (a, b) if a.is_wild() || b.is_wild() => true,
            (Ty::Int, Ty::Float) => true,
            (Ty::List(a), Ty::List(b)) => a.fits(b),
            (Ty::Record(a), Ty::Record(b)) => b.fields.iter().all(|bf| match a.field(&bf.name) {
                Some(af) => af.ty.fits(&bf.ty) && (bf.optional || !af.optional),
                None => bf.optional,
            }),
            (a, b) => a == b,
        }
    }

    /// The common type two values can be compared or merged as (`case` branches, `in` lists).
    pub fn unify(&self, other: &Ty) -> Option<Ty> {
        match (self, other) {
            (Ty::Error, _) | (_, Ty::Error) => Some(Ty::Error),
            (Ty::Null, t) | (t, Ty::Null) => Some(t.clone()),
            (Ty::Int, Ty::Float) | (Ty::Float, Ty::Int) => Some(Ty::Float),
            (Ty::List(a), Ty::List(b)) => a.unify(b).map(|t| Ty::List(Box::new(t))),
            (a, b) if a == b => Some(a.clone()),
            _ => None,
        }
    }

    /// The Arrow type values of this type travel as.
    pub fn to_arrow(&self) -> DataType {
        match self {
            Ty::String => DataType::Utf8,
            Ty::Int => DataType::Int64,
            Ty::Float => DataType::Float64,
            Ty::Bool => DataType::Boolean,
            Ty::Timestamp => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            Ty::Duration => DataType::Duration(TimeUnit::Nanosecond),
            Ty::List(t) => DataType::List(Arc::new(Field::new("item", t.to_arrow(), true))),
            Ty::Record(r) => DataType::Struct(r.arrow_fields()),
            Ty::Null | Ty::Error => DataType::Null,
        }
    }

    /// A built-in scalar type by name.
    pub fn builtin(name: &str) -> Option<Ty> {
        Some(match name {
            "string" => Ty::String,
            "int" => Ty::Int,
            "float" => Ty::Float,
            "bool" => Ty::Bool,
            "timestamp" => Ty::Timestamp,
            "duration" => Ty::Duration,
            _ => return None,
        })
    }

    /// The type with its indefinite article, for messages: `an int`, `a string`.
    pub fn a(&self) -> String {
        let name = self.to_string();
        let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        format!("{article} {name}")
    }

    pub const BUILTIN_NAMES: &'static [&'static str] = &["string", "int", "float", "bool", "timestamp", "duration"];
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::String => f.write_str("string"),
            Ty::Int => f.write_str("int"),
            Ty::Float => f.write_str("float"),
            Ty::Bool => f.write_str("bool"),
            Ty::Timestamp => f.write_str("timestamp"),
            Ty::Duration => f.write_str("duration"),
            Ty::List(t) => write!(f, "list<{t}>"),
            Ty::Record(r) => {
                f.write_str("{ ")?;
                for (i, field) in r.fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {}{}", field.name, field.ty, if field.optional { "?" } else { "" })?;
                }
                f.write_str(" }")
            }
            Ty::Null => f.write_str("null"),
            Ty::Error => f.write_str("{unknown}"),
        }
    }
}

/// The type of the events on one stream (the output of a source, stage or `.errors` port).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamType {
    /// Declared fields: what expressions may use.
    pub record: Arc<Record>,
    /// Undeclared fields of the input travel along untouched (true until a `select` without `*`).
    pub open: bool,
    /// `@name` metadata available on this stream.
    pub metadata: Arc<Record>,
}

impl StreamType {
    /// The Arrow schema of a batch on this stream: declared fields, then metadata as `@name`.
    pub fn arrow_schema(&self) -> Arc<Schema> {
        let mut fields: Vec<Field> =
            self.record.fields.iter().map(|f| Field::new(&f.name, f.ty.to_arrow(), f.optional)).collect();
        fields.extend(
            self.metadata.fields.iter().map(|m| Field::new(format!("@{}", m.name), m.ty.to_arrow(), m.optional)),
        );
        Arc::new(Schema::new(fields))
    }
}

/// The record every `.errors` port carries: the failed event and why it failed.
pub fn dead_letter_record() -> Arc<Record> {
    let f = |name: &str, ty: Ty, optional: bool| RecordField { name: name.into(), ty, optional };
    Arc::new(Record {
        fields: vec![
            f("error", Ty::String, false),
            f("node", Ty::String, false),
            f("payload", Ty::String, false),
            f("attempts", Ty::Int, false),
            f("ts", Ty::Timestamp, false),
        ],
    })
}

/// The type of a `.errors` stream: dead letters, no undeclared fields, no metadata.
pub fn dead_letter_stream() -> StreamType {
    StreamType { record: dead_letter_record(), open: false, metadata: Arc::new(Record::default()) }
}

/// Nanoseconds in one duration unit (`ms` → 1_000_000): the units of duration literals.
pub fn duration_unit_ns(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    })
}

/// Bytes in one size unit (`MiB` → 1_048_576): the units of size literals.
pub fn size_unit_bytes(unit: &str) -> Option<u64> {
    Some(match unit {
        "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    })
}
