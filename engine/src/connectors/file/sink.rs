//! The `file` sink: NDJSON, one event per line, handed to the OS (`write(2)`) before events are
//! acknowledged.
//!
//! Lines gather in one buffer owned by the sink and reach the file through `std::fs` on the
//! blocking pool: one copy from the batch into the buffer and one `write` per megabyte, where
//! `tokio::fs` behind a `BufWriter` copies each buffer twice more.
//!
//! Two versions of a flow run side by side while one replaces the other (`crate::swap`), so
//! two sinks of one process may write one path. They share one handle ([`OPEN`]) and each
//! writes its buffer whole under its lock: `O_APPEND` alone keeps one `write` call whole, but
//! a short write's rest would land after the other sink's lines. A sink that finds the file
//! ending inside another sink's line (its write failed part-way) waits for that line to be
//! finished. And a sink opening a path another sink of the process has open neither truncates
//! it (`append = false`) nor starts a new line: the other one's acknowledged lines are there.

use crate::connectors::{BoxFuture, ConnectorError, Sink, WriteError};
use crate::exec::batch::SinkBatch;
use crate::options::Options;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};

/// Buffered bytes that make a `write` worth its system call.
const WRITE_AT: usize = 1 << 20;

/// The files the `file` sinks of this process have open, by canonical path.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<SharedFile>>>> = LazyLock::new(Default::default);

/// Tells the sinks writing one file apart.
static SINK_IDS: AtomicU64 = AtomicU64::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while writing leaves the file where the kernel put it: go on from there.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One open file and who may append to it.
#[derive(Debug)]
struct SharedFile {
    state: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    file: std::fs::File,
    /// The sink whose last write stopped inside a line: only it may write until it finishes it.
    torn_by: Option<u64>,
    /// The file ends inside a line nobody will finish (its sink is gone): the next write
    /// starts a new line.
    orphan: bool,
}

#[derive(Debug)]
pub struct FileSink {
    path: String,
    id: u64,
    file: Arc<SharedFile>,
    /// Lines accepted by `write` and not yet in the file.
    buf: Vec<u8>,
    /// The last flush failed: if `write` comes next instead of another flush, the engine gave
    /// those events up (dead-lettered them), so their lines must not reach the file later.
    abandoned: bool,
    /// The file ends inside a line: a write stopped part-way through it.
    torn: bool,
}

impl FileSink {
    pub fn new(options: &Options) -> Result<FileSink, ConnectorError> {
        let path = options.str("path").unwrap_or_default().to_string();
        let append = options.bool("append").unwrap_or(true);
        let p = std::path::Path::new(&path);
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| ConnectorError(format!("cannot create `{}`: {e}", dir.display())))?;
        }
        let id = SINK_IDS.fetch_add(1, Ordering::Relaxed);
        let mut buf = Vec::with_capacity(WRITE_AT + (WRITE_AT >> 2));
        // The key is the canonical path: the directory exists by now, the file may not yet.
        let key = match (p.parent().filter(|d| !d.as_os_str().is_empty()), p.file_name()) {
            (Some(dir), Some(name)) => dir.canonicalize().map(|d| d.join(name)),
            (None, Some(name)) => std::env::current_dir().map(|d| d.join(name)),
            _ => Ok(p.to_path_buf()),
        }
        .map_err(|e| ConnectorError(format!("cannot open `{path}` for writing: {e}")))?;
        let mut open = lock(&OPEN);
        if let Some(file) = open.get(&key).and_then(Weak::upgrade) {
            return Ok(FileSink { path, id, file, buf, abandoned: false, torn: false });
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .read(true)
            .write(true)
            .truncate(!append)
            .open(p)
            .map_err(|e| ConnectorError(format!("cannot open `{path}` for writing: {e}")))?;
        // A file an earlier run left ending inside a line (it was killed mid-write, or gave up
        // on a full disk): start on a new line, so that fragment cannot swallow our first event.
        if append && !ends_with_newline(&file) {
            buf.push(b'\n');
        }
        let file = Arc::new(SharedFile { state: Mutex::new(FileState { file, torn_by: None, orphan: false }) });
        open.retain(|_, w| w.strong_count() > 0);
        open.insert(key, Arc::downgrade(&file));
        Ok(FileSink { path, id, file, buf, abandoned: false, torn: false })
    }

    /// Write the whole buffer to the file. On an error the bytes not yet written stay buffered,
    /// so a retry continues exactly where the file ends: no byte is written twice.
    async fn drain(&mut self) -> Result<(), WriteError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let failed = |e: String| WriteError::Retryable(format!("writing `{}`: {e}", self.path));
        let (shared, id) = (self.file.clone(), self.id);
        let mut buf = std::mem::take(&mut self.buf);
        let (buf, result) = tokio::task::spawn_blocking(move || {
            let mut state = lock(&shared.state);
            if state.torn_by.is_some_and(|other| other != id) {
                let busy = std::io::Error::other("another writer of this file has not finished its line yet");
                return (buf, (Err(busy), None));
            }
            if state.orphan {
                if let Err(e) = write_all(&mut state.file, b"\n") {
                    return (buf, (Err(e), None));
                }
                state.orphan = false;
            }
            let mut done = 0;
            let result = loop {
                if done == buf.len() {
                    break Ok(());
                }
                match state.file.write(&buf[done..]) {
                    Ok(0) => break Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let torn = (done > 0).then(|| buf[done - 1] != b'\n');
            if let Some(t) = torn {
                state.torn_by = t.then_some(id);
            }
            drop(state);
            buf.drain(..done);
            (buf, (result, torn))
        })
        .await
        .map_err(|e| failed(e.to_string()))?;
        self.buf = buf;
        let (result, torn) = result;
        if let Some(t) = torn {
            self.torn = t;
        }
        result.map_err(|e| failed(e.to_string()))
    }

    /// Forget the lines of a group the engine gave up on (it dead-lettered their events), but
    /// finish a line the file ends inside: a duplicate of that one event, never a broken line.
    fn forget(&mut self) {
        let keep = if self.torn { self.buf.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1) } else { 0 };
        self.buf.truncate(keep);
    }
}

fn write_all(file: &mut std::fs::File, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match file.write(bytes) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // A line this sink leaves unfinished would block the other writers of the file.
        let mut state = lock(&self.file.state);
        if state.torn_by == Some(self.id) {
            state.torn_by = None;
            state.orphan = true;
        }
    }
}

/// Whether `file` is empty or its last byte is a newline (unknown counts as yes).
fn ends_with_newline(file: &std::fs::File) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(len) = file.metadata().map(|m| m.len()) else { return true };
    if len == 0 {
        return true;
    }
    let mut f = file;
    let mut last = [0u8; 1];
    // Appends always go to the end, so moving the shared cursor here changes nothing.
    let read = f.seek(SeekFrom::Start(len - 1)).and_then(|_| f.read_exact(&mut last));
    read.is_err() || last[0] == b'\n'
}

impl Sink for FileSink {
    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            if std::mem::take(&mut self.abandoned) {
                self.forget();
            }
            // Drain before taking the batch: if that fails, the batch was not taken and the
            // engine's retry of this write cannot add its lines twice.
            if self.buf.len() >= WRITE_AT {
                self.drain().await?;
            }
            batch.append_ndjson(&mut self.buf);
            Ok(())
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(async move {
            let result = self.drain().await;
            self.abandoned = result.is_err();
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::ack::Ack;
    use crate::options::Settings;
    use arrow::array::BinaryArray;
    use phoenix_dsl::plan::graph::OptionValue;

    fn batch(lines: &[&str]) -> SinkBatch {
        SinkBatch {
            payloads: BinaryArray::from_iter_values(lines.iter().map(|l| l.as_bytes())),
            fields: Vec::new(),
            ack: Ack::none(),
        }
    }

    #[test]
    fn an_appended_file_left_inside_a_line_gets_a_newline_first() {
        let path = std::env::temp_dir().join(format!("phoenix-file-sink-torn-{}.jsonl", std::process::id()));
        std::fs::write(&path, "{\"id\":1}\n{\"id\":2,\"pa").unwrap();
        let written = vec![("path".to_string(), OptionValue::String(path.display().to_string()))];
        let options = Options::resolve("out", &super::super::sink_spec(), &written, &Settings::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut sink = FileSink::new(&options).unwrap();
            sink.write(&batch(&["{\"id\":3}"])).await.unwrap();
            sink.flush().await.unwrap();
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"id\":1}\n{\"id\":2,\"pa\n{\"id\":3}\n");
        std::fs::remove_file(&path).ok();
    }

    #[tokio::test]
    async fn lines_reach_the_file_in_order_across_drains() {
        let path = std::env::temp_dir().join(format!("phoenix-file-sink-{}.jsonl", std::process::id()));
        let written = vec![
            ("path".to_string(), OptionValue::String(path.display().to_string())),
            ("append".to_string(), OptionValue::Bool(false)),
        ];
        let options = Options::resolve("out", &super::super::sink_spec(), &written, &Settings::default()).unwrap();
        let mut sink = FileSink::new(&options).unwrap();
        // Enough batches to cross WRITE_AT several times.
        let line = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000));
        let lines: Vec<&str> = std::iter::repeat_n(line.as_str(), 100).collect();
        for _ in 0..40 {
            sink.write(&batch(&lines)).await.unwrap();
        }
        sink.write(&batch(&["{\"last\":1}"])).await.unwrap();
        sink.flush().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), 4001);
        assert!(got[..4000].iter().all(|l| *l == line));
        assert_eq!(got[4000], "{\"last\":1}");
        std::fs::remove_file(&path).ok();
    }

    /// Two versions of a flow writing one path (make-before-break): the second neither
    /// truncates nor starts a new line, and their buffers never interleave inside a line.
    #[tokio::test]
    async fn two_sinks_of_one_path_share_it_whole_lines_only() {
        let path = std::env::temp_dir().join(format!("phoenix-file-sink-shared-{}.jsonl", std::process::id()));
        let written = vec![
            ("path".to_string(), OptionValue::String(path.display().to_string())),
            ("append".to_string(), OptionValue::Bool(false)),
        ];
        let options = Options::resolve("out", &super::super::sink_spec(), &written, &Settings::default()).unwrap();
        let mut old = FileSink::new(&options).unwrap();
        old.write(&batch(&["{\"v\":0}"])).await.unwrap();
        old.flush().await.unwrap();
        let mut new = FileSink::new(&options).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"v\":0}\n", "not truncated");
        let (a, b) = (
            format!("{{\"v\":1,\"pad\":\"{}\"}}", "a".repeat(3000)),
            format!("{{\"v\":2,\"pad\":\"{}\"}}", "b".repeat(3000)),
        );
        let (la, lb): (Vec<&str>, Vec<&str>) = (vec![a.as_str(); 100], vec![b.as_str(); 100]);
        async fn write(sink: &mut FileSink, lines: Vec<&str>) {
            let batch = batch(&lines);
            for _ in 0..20 {
                sink.write(&batch).await.unwrap();
            }
            sink.flush().await.unwrap();
        }
        tokio::join!(write(&mut old, la), write(&mut new, lb));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4001);
        assert_eq!(lines.iter().filter(|l| **l == a).count(), 2000);
        assert_eq!(lines.iter().filter(|l| **l == b).count(), 2000);

        // A line left unfinished by one sink holds the other back until it is finished, or
        // its sink is gone (then the next write starts a new line).
        lock(&old.file.state).torn_by = Some(old.id);
        new.write(&batch(&["{\"v\":3}"])).await.unwrap();
        assert!(new.flush().await.is_err(), "waits for the other sink's line");
        drop(old);
        new.flush().await.unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n\n{\"v\":3}\n"));
        std::fs::remove_file(&path).ok();
    }
}
