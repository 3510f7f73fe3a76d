//! The `file` sink: NDJSON, one event per line, flushed to the OS before events are
//! acknowledged.

use crate::connectors::{BoxFuture, ConnectorError, Sink, WriteError};
use crate::exec::batch::SinkBatch;
use crate::options::Options;
use tokio::io::{AsyncWriteExt, BufWriter};

#[derive(Debug)]
pub struct FileSink {
    path: String,
    out: BufWriter<tokio::fs::File>,
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
        Ok(FileSink { path, out: BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file)) })
    }
}

impl Sink for FileSink {
    fn write<'a>(&'a mut self, batch: &'a SinkBatch) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            let lines = batch.ndjson();
            self.out.write_all(&lines).await.map_err(|e| WriteError::Retryable(format!("writing `{}`: {e}", self.path)))
        })
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), WriteError>> {
        Box::pin(async move {
            self.out.flush().await.map_err(|e| WriteError::Retryable(format!("writing `{}`: {e}", self.path)))
        })
    }
}
