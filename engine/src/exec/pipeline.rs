//! Fused operator pipelines: everything downstream of one port (a source's output, a source's
//! or sink's `.errors`) runs in the task that produced the batch, stage after stage, without a
//! channel between stages. Fan-out hands each branch the same batch (Arrow arrays are shared,
//! not copied).
//!
//! A stage that fails on a batch (an integer divided by zero, a failing cast) is retried on
//! halves of it until the failing events are isolated; those become dead letters and the rest
//! go on. User data cannot stop a pipeline.

use super::RAW_COLUMN;
use super::ack::Ack;
use super::batch::{DeadLetter, SinkBatch};
use super::encode::Encoder;
use crate::observability::metrics::NodeStats;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::array::{BinaryViewArray, Int64Array, NullArray, new_null_array};
use arrow::compute::kernels::boolean::{and_not, not, or};
use arrow::compute::{cast, filter_record_batch, prep_null_mask_filter};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::utils::collect_columns;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

pub type PhysExpr = Arc<dyn PhysicalExpr>;

/// Everything wired to one port.
#[derive(Debug, Default)]
pub struct Pipeline {
    pub targets: Vec<Target>,
}

#[derive(Debug)]
pub enum Target {
    Stage(Box<Stage>),
    Sink(SinkTarget),
}

/// An edge into a sink: how to encode events and compute the sink's per-event options.
#[derive(Debug)]
pub struct SinkTarget {
    /// Index of the sink in the task graph.
    pub sink: usize,
    pub title: String,
    pub exprs: Vec<(String, PhysExpr)>,
    pub encoder: Encoder,
}

#[derive(Debug)]
pub struct Stage {
    /// `where at flow.phx:4:5`: names the stage in dead letters.
    pub title: String,
    pub stats: Arc<NodeStats>,
    pub op: Op,
}

#[derive(Debug)]
pub enum Op {
    Filter {
        predicate: PhysExpr,
        /// Drops the columns only the predicate reads before filtering.
        narrow: Option<Narrow>,
        out: Pipeline,
    },
    Project {
        items: Vec<PhysExpr>,
        /// How each output column is made.
        columns: Vec<Column>,
        schema: SchemaRef,
        out: Pipeline,
    },
    Route {
        all: bool,
        arms: Vec<Arm>,
        /// Drops the columns only the conditions read before the arms get their rows.
        narrow: Option<Narrow>,
    },
    Drop,
}

/// Columns a stage reads but nothing after it does: they become `NullArray`s before the stage
/// filters, so they are not copied for rows that go on.
#[derive(Debug)]
pub struct Narrow {
    keep: Vec<bool>,
    schema: SchemaRef,
}

impl Narrow {
    /// `None` unless the stage's own expressions (`own`) read a column `after` (what the
    /// stages after it read, see [`Pipeline::reads`]) does not.
    pub fn new(schema: &Schema, own: &[&PhysExpr], after: Vec<bool>) -> Option<Narrow> {
        let only_here =
            own.iter().flat_map(|e| collect_columns(e)).any(|c| !after.get(c.index()).copied().unwrap_or(true));
        only_here.then(|| Narrow { schema: prune(schema, &after), keep: after })
    }

    pub(crate) fn apply(&self, batch: &RecordBatch) -> StageResult<RecordBatch> {
        let columns = batch
            .columns()
            .iter()
            .zip(&self.keep)
            .map(|(c, &keep)| if keep { c.clone() } else { Arc::new(NullArray::new(batch.num_rows())) as ArrayRef })
            .collect();
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone)]
pub enum Column {
    /// The value of `select` item `i`.
    Item(usize),
    /// Input column `i`, passed through.
    Input(usize),
    /// Read by nothing downstream: a `NullArray`, so no stage after this one copies it.
    Unused,
    /// Not in the input: metadata only other streams of a `merge` have. Nulls of its type.
    Null,
    /// `select` item `i`, read by nothing downstream: still evaluated and cast to its type
    /// (either can fail and dead-letter the event), then carried as a `NullArray`.
    UnusedItem(usize, DataType),
}

#[derive(Debug)]
pub struct Arm {
    /// The pattern as written (`'order'`, `when amount > 10`, `else`), for traces.
    pub label: String,
    /// `None`: the `else` arm.
    pub condition: Option<PhysExpr>,
    pub out: Pipeline,
}

/// What running a pipeline produced: batches for sinks (by sink index) and dead letters.
#[derive(Debug, Default)]
pub struct Emit {
    pub sinks: Vec<(usize, SinkBatch)>,
    pub dead: Vec<DeadLetter>,
}

pub(crate) type StageResult<T> = Result<T, String>;

impl Pipeline {
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn push(&self, batch: &RecordBatch, ack: &Ack, emit: &mut Emit) {
        if batch.num_rows() == 0 {
            return;
        }
        for t in &self.targets {
            match t {
                Target::Stage(s) => s.push(batch, ack, emit),
                Target::Sink(s) => isolate(batch, &s.title, None, emit, &mut |b, emit| s.push(b, ack, emit)),
            }
        }
    }

    /// Which columns of its input (`schema`) this pipeline reads: the columns its expressions
    /// and encoders use, and the raw payload (every stage can make dead letters). The others
    /// can be left out of the batch (see [`Column::Unused`]); that changes no result.
    pub fn reads(&self, schema: &Schema) -> Vec<bool> {
        let mut used = vec![false; schema.fields().len()];
        if let Ok(i) = schema.index_of(RAW_COLUMN) {
            used[i] = true;
        }
        self.mark(schema, &mut used);
        used
    }

    fn mark(&self, schema: &Schema, used: &mut [bool]) {
        let expr = |e: &PhysExpr, used: &mut [bool]| {
            for c in collect_columns(e) {
                if let Some(u) = used.get_mut(c.index()) {
                    *u = true;
                }
            }
        };
        for t in &self.targets {
            match t {
                Target::Sink(s) => {
                    s.exprs.iter().for_each(|(_, e)| expr(e, used));
                    if let Encoder::Patch(fields) | Encoder::Columns(fields) = &s.encoder {
                        for f in fields {
                            if let Ok(i) = schema.index_of(f) {
                                used[i] = true;
                            }
                        }
                    }
                }
                Target::Stage(st) => match &st.op {
                    Op::Filter { predicate, out, .. } => {
                        expr(predicate, used);
                        out.mark(schema, used);
                    }
                    Op::Route { arms, .. } => {
                        for a in arms {
                            if let Some(c) = &a.condition {
                                expr(c, used);
                            }
                            a.out.mark(schema, used);
                        }
                    }
                    // Every item is evaluated (a failing one dead-letters its event), whether or
                    // not its column is read later; passed-through columns only if they are.
                    Op::Project { items, columns, schema: projected, out } => {
                        items.iter().for_each(|e| expr(e, used));
                        for (c, read) in columns.iter().zip(out.reads(projected)) {
                            if let (Column::Input(i), true) = (c, read) {
                                used[*i] = true;
                            }
                        }
                    }
                    Op::Drop => {}
                },
            }
        }
    }

    /// Every sink this pipeline can reach.
    pub fn sinks(&self, out: &mut Vec<usize>) {
        for t in &self.targets {
            match t {
                Target::Sink(s) => out.push(s.sink),
                Target::Stage(s) => match &s.op {
                    Op::Filter { out: p, .. } | Op::Project { out: p, .. } => p.sinks(out),
                    Op::Route { arms, .. } => arms.iter().for_each(|a| a.out.sinks(out)),
                    Op::Drop => {}
                },
            }
        }
    }
}

impl SinkTarget {
    pub(crate) fn push(&self, batch: &RecordBatch, ack: &Ack, emit: &mut Emit) -> StageResult<()> {
        let mut fields = Vec::with_capacity(self.exprs.len());
        for (name, e) in &self.exprs {
            fields.push((name.clone(), evaluate(e, batch)?));
        }
        let payloads = self.encoder.encode(batch).map_err(|e| e.to_string())?;
        emit.sinks.push((self.sink, SinkBatch { payloads, fields, ack: ack.clone() }));
        Ok(())
    }
}

impl Stage {
    fn push(&self, batch: &RecordBatch, ack: &Ack, emit: &mut Emit) {
        self.stats.events_in.inc_by(batch.num_rows() as u64);
        isolate(batch, &self.title, Some(&self.stats), emit, &mut |b, emit| self.run(b, ack, emit));
    }

    /// Apply the operator, then (only if it succeeded) hand the results on.
    fn run(&self, batch: &RecordBatch, ack: &Ack, emit: &mut Emit) -> StageResult<()> {
        match &self.op {
            Op::Filter { predicate, narrow, out } => {
                let selected = mask(predicate, batch)?;
                let keep = match narrow {
                    Some(n) => filter(&selected, &n.apply(batch)?)?,
                    None => filter(&selected, batch)?,
                };
                self.stats.events_out.inc_by(keep.num_rows() as u64);
                out.push(&keep, ack, emit);
            }
            Op::Project { items, columns, schema, out } => {
                let projected = project(items, columns, schema, batch)?;
                self.stats.events_out.inc_by(projected.num_rows() as u64);
                out.push(&projected, ack, emit);
            }
            Op::Route { all, arms, narrow } => {
                for (arm, b) in arms.iter().zip(route(*all, arms, narrow.as_ref(), batch)?) {
                    self.stats.events_out.inc_by(b.num_rows() as u64);
                    arm.out.push(&b, ack, emit);
                }
            }
            Op::Drop => {}
        }
        Ok(())
    }
}

/// A `select`'s output batch (its input's raw payloads carried on).
pub(crate) fn project(
    items: &[PhysExpr],
    columns: &[Column],
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> StageResult<RecordBatch> {
    let values = items.iter().map(|e| evaluate(e, batch)).collect::<StageResult<Vec<_>>>()?;
    let mut arrays = Vec::with_capacity(columns.len() + 1);
    for (c, field) in columns.iter().zip(schema.fields()) {
        let a = match c {
            Column::Item(i) => values[*i].clone(),
            Column::Input(i) => batch.column(*i).clone(),
            Column::Unused => Arc::new(NullArray::new(batch.num_rows())),
            Column::Null => new_null_array(field.data_type(), batch.num_rows()),
            Column::UnusedItem(i, ty) => {
                if values[*i].data_type() != ty {
                    cast(&values[*i], ty).map_err(|e| e.to_string())?;
                }
                Arc::new(NullArray::new(batch.num_rows()))
            }
        };
        let a = if a.data_type() == field.data_type() {
            a
        } else {
            cast(&a, field.data_type()).map_err(|e| e.to_string())?
        };
        arrays.push(a);
    }
    let raw = batch.column_by_name(RAW_COLUMN).ok_or("batch without raw payloads")?;
    arrays.push(raw.clone());
    RecordBatch::try_new(schema.clone(), arrays).map_err(|e| e.to_string())
}

/// The rows each arm of a route gets, arm by arm.
pub(crate) fn route(
    all: bool,
    arms: &[Arm],
    narrow: Option<&Narrow>,
    batch: &RecordBatch,
) -> StageResult<Vec<RecordBatch>> {
    // Evaluate every condition first, so a failure sends nothing on.
    let conds = arms
        .iter()
        .map(|a| a.condition.as_ref().map(|c| mask(c, batch)).transpose())
        .collect::<StageResult<Vec<_>>>()?;
    let mut taken: Option<BooleanArray> = None;
    let mut selections = Vec::with_capacity(arms.len());
    for cond in &conds {
        let sel = match (cond, &taken) {
            (Some(c), None) => c.clone(),
            (Some(c), Some(t)) if !all => and_not(c, t).map_err(|e| e.to_string())?,
            (Some(c), Some(_)) => c.clone(),
            // `else`: what no other arm took (for `route all`, what no arm matched).
            (None, None) => BooleanArray::from(vec![true; batch.num_rows()]),
            (None, Some(t)) => not(t).map_err(|e| e.to_string())?,
        };
        if let Some(c) = cond {
            taken = Some(match &taken {
                None => c.clone(),
                Some(t) => or(t, c).map_err(|e| e.to_string())?,
            });
        }
        selections.push(sel);
    }
    // An `else` arm before others would see rows later arms take; the checker puts `else`
    // last, so each selection is final here.
    let narrowed = narrow.map(|n| n.apply(batch)).transpose()?;
    let rows = narrowed.as_ref().unwrap_or(batch);
    selections.iter().map(|sel| filter(sel, rows)).collect()
}

/// `schema` with the columns nobody reads typed `Null`: they travel as `NullArray`s, which
/// cost nothing to build, filter or slice.
pub fn prune(schema: &Schema, read: &[bool]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(read)
        .map(|(f, &r)| if r { f.as_ref().clone() } else { Field::new(f.name(), DataType::Null, true) })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Run `f` on `batch`; if it fails, on each half, down to single events, which become dead
/// letters. A panic in a kernel counts as a failure of that batch.
fn isolate(
    batch: &RecordBatch,
    title: &str,
    stats: Option<&NodeStats>,
    emit: &mut Emit,
    f: &mut dyn FnMut(&RecordBatch, &mut Emit) -> StageResult<()>,
) {
    let result = catch_unwind(AssertUnwindSafe(|| f(batch, emit)))
        .unwrap_or_else(|p| Err(format!("internal error: {}", panic_message(&p))));
    let Err(error) = result else { return };
    let n = batch.num_rows();
    if n == 1 {
        if let Some(s) = stats {
            s.errors.inc();
        }
        emit.dead.push(DeadLetter { error, node: title.to_string(), payload: raw_payload(batch, 0), attempts: 1 });
        return;
    }
    let mid = n / 2;
    isolate(&batch.slice(0, mid), title, stats, emit, f);
    isolate(&batch.slice(mid, n - mid), title, stats, emit, f);
}

pub(crate) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

pub fn raw_payload(batch: &RecordBatch, row: usize) -> Bytes {
    match batch.column_by_name(RAW_COLUMN).and_then(|c| c.as_binary_view_opt()) {
        Some(raw) if !raw.is_null(row) => Bytes::copy_from_slice(raw.value(row)),
        _ => Bytes::new(),
    }
}

fn evaluate(e: &PhysExpr, batch: &RecordBatch) -> StageResult<ArrayRef> {
    e.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())).map_err(|e| clean(e.to_string()))
}

/// A predicate's value as a selection: NULL selects nothing (three-valued logic).
pub(crate) fn mask(e: &PhysExpr, batch: &RecordBatch) -> StageResult<BooleanArray> {
    let v = evaluate(e, batch)?;
    let b = v.as_boolean_opt().ok_or_else(|| format!("condition gave {} instead of bool", v.data_type()))?;
    Ok(if b.null_count() > 0 { prep_null_mask_filter(b) } else { b.clone() })
}

fn filter(mask: &BooleanArray, batch: &RecordBatch) -> StageResult<RecordBatch> {
    if mask.true_count() == batch.num_rows() {
        return Ok(batch.clone());
    }
    filter_record_batch(batch, mask).map_err(|e| e.to_string())
}

/// DataFusion wraps messages in layers ("Arrow error: Divide by zero error"); keep the point.
fn clean(s: String) -> String {
    let mut s = s.as_str();
    for p in ["Execution error: ", "Arrow error: ", "Internal error: ", "Compute error: "] {
        s = s.strip_prefix(p).unwrap_or(s);
    }
    s.to_string()
}

/// Dead letters as a batch of the `.errors` stream (`error, node, payload, attempts, ts`).
pub fn dead_letter_batch(dead: &[DeadLetter], schema: &SchemaRef, now_ns: i64) -> Result<RecordBatch, String> {
    let text = |f: &dyn Fn(&DeadLetter) -> String| Arc::new(dead.iter().map(f).map(Some).collect::<StringArray>());
    let columns: Vec<ArrayRef> = vec![
        text(&|d| d.error.clone()),
        text(&|d| d.node.clone()),
        text(&|d| String::from_utf8_lossy(&d.payload).into_owned()),
        Arc::new(dead.iter().map(|d| d.attempts).collect::<Int64Array>()),
        Arc::new(TimestampNanosecondArray::from(vec![now_ns; dead.len()]).with_timezone("UTC")),
        Arc::new(dead.iter().map(|d| Some(d.payload.as_ref())).collect::<BinaryViewArray>()),
    ];
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}
