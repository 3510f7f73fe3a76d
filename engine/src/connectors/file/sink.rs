//! The `file` sink: NDJSON, one event per line, handed to the OS before events are
//! acknowledged.
//!
//! Lines are gathered in one buffer and written with blocking `std::fs` calls on tokio's
//! blocking pool, a megabyte at a time: `tokio::fs` would copy every write into its own buffer
//! and hop threads per call.

use crate::connectors::{BoxFuture, ConnectorError, Sink, WriteError};
use crate::exec::batch::SinkBatch;
use crate::options::Options;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Write once this much is buffered, without waiting for a flush.
const WRITE_AT: usize = 1 << 20;

#[derive(Debug)]
pub struct FileSink {
    path: Arc<str>,
    file: Arc<Mutex<std::fs::File>>,
    pending: Vec<u8>,
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
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(p)
            .map_err(|e| ConnectorError(format!("cannot open `{path}` for writing: {e}")))?;
        Ok(FileSink { path: path.into(), file: Arc::new(Mutex::new(file)), pending: Vec::with_capacity(2 * WRITE_AT) })
    }

    /// Write everything pending. On failure the lines stay pending, so a retry writes them.
    async fn write_pending(&mut self) -> Result<(), WriteError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let file = self.file.clone();
        let buf = std::mem::take(&mut self.pending);
        let (buf, result) = tokio::task::spawn_blocking(move || {
            let result = match file.lock() {
                Ok(mut f) => f.write_all(&buf),
                Err(_) => Err(std::io::Error::other("an earlier write panicked")),
            };
            (buf, result)
        })
        .await
        .map_err(|e| WriteError::Retryable(format!("writing `{}`: {e}", self.path)))?;
        self.pending = buf;
        // A partial write_all leaves an unknown prefix on disk; retrying the whole buffer can
        // duplicate lines but never loses them (at-least-once).
        result.map_err(|e| WriteError::Retryable(format!("writing `{}`: {e}", self.path)))?;
        self.pending.clear();
        Ok(())
    }
}

impl Sink for FileSink {
    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            // Write out what is pending first, so a failure leaves this batch unbuffered and a
            // retry of it adds it once.
            if self.pending.len() >= WRITE_AT {
                self.write_pending().await?;
            }
            batch.append_ndjson(&mut self.pending);
            Ok(())
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(self.write_pending())
    }
}
