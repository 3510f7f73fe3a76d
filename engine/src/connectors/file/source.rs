//! The `file` source: NDJSON streamed in chunks; JSON-array files (the batch-upload path) read
//! whole and split into their elements.

use crate::connectors::lines::{Origin, read_ndjson};
use crate::connectors::{BoxFuture, ConnectorError, Source, SourceContext};
use crate::exec::ack::Ack;
use crate::exec::batch::RawBatchBuilder;
use crate::options::Options;
use arrow::array::{ArrayRef, Int64Array, StringArray};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

#[derive(Debug)]
pub struct FileSource {
    files: Vec<PathBuf>,
    format: String,
}

impl FileSource {
    pub fn new(options: &Options) -> Result<FileSource, ConnectorError> {
        let path = options.str("path").unwrap_or_default();
        let format = options.str("format").unwrap_or("auto").to_string();
        Ok(FileSource { files: expand(path)?, format })
    }
}

/// A file, every file in a directory, or every file a glob matches; sorted, never empty.
fn expand(path: &str) -> Result<Vec<PathBuf>, ConnectorError> {
    let p = PathBuf::from(path);
    let mut files: Vec<PathBuf> = if p.is_dir() {
        std::fs::read_dir(&p)
            .map_err(|e| ConnectorError(format!("cannot list `{path}`: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.is_file() && !f.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect()
    } else if path.contains(['*', '?', '[']) {
        glob::glob(path)
            .map_err(|e| ConnectorError(format!("bad glob `{path}`: {e}")))?
            .filter_map(Result::ok)
            .filter(|f| f.is_file())
            .collect()
    } else if p.is_file() {
        vec![p]
    } else {
        return Err(ConnectorError(format!("`{path}` does not exist")));
    };
    files.sort();
    if files.is_empty() {
        return Err(ConnectorError(format!("no files match `{path}`")));
    }
    Ok(files)
}

impl Source for FileSource {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), ConnectorError>> {
        Box::pin(async move {
            for path in &self.files {
                let name = path.display().to_string();
                let io = |e: std::io::Error| ConnectorError(format!("reading `{name}`: {e}"));
                let mut file = tokio::fs::File::open(path).await.map_err(io)?;
                ctx.set_connected();
                let json_array = match self.format.as_str() {
                    "json" => true,
                    "ndjson" => false,
                    _ => {
                        let mut head = [0u8; 256];
                        let n = file.read(&mut head).await.map_err(io)?;
                        file.rewind().await.map_err(io)?;
                        head[..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
                    }
                };
                let stopped = if json_array {
                    let mut data = Vec::new();
                    file.read_to_end(&mut data).await.map_err(io)?;
                    send_array(Bytes::from(data), &name, &ctx).await.is_err()
                } else {
                    let origin = Origin { file: Some(Arc::from(name.as_str())), line: 0 };
                    read_ndjson(file, origin, &ctx).await.map_err(io)?.is_err()
                };
                if stopped {
                    break;
                }
            }
            Ok(())
        })
    }
}

/// A file holding one JSON array: each element is an event; a file that is not an array is
/// one dead letter saying why.
async fn send_array(data: Bytes, name: &str, ctx: &SourceContext) -> Result<(), crate::connectors::Stopped> {
    let items: Vec<&RawValue> = match serde_json::from_slice(&data) {
        Ok(items) => items,
        Err(e) => {
            let mut b = RawBatchBuilder::default().finish(Vec::new(), Ack::none());
            b.rejected.push((data.clone(), format!("`{name}` is not a JSON array of events: {e}")));
            return ctx.send(b).await;
        }
    };
    for (n, chunk) in items.chunks(ctx.batch_size).enumerate() {
        let mut b = RawBatchBuilder::default();
        for item in chunk {
            b.push(item.get().as_bytes());
        }
        let first = (n * ctx.batch_size) as i64;
        let mut meta: Vec<(&'static str, ArrayRef)> = Vec::new();
        if ctx.reads_metadata("line") {
            meta.push(("line", Arc::new(Int64Array::from_iter_values((0..chunk.len() as i64).map(|i| first + i + 1)))));
        }
        if ctx.reads_metadata("file") {
            meta.push(("file", Arc::new(StringArray::from_iter_values(std::iter::repeat_n(name, chunk.len())))));
        }
        ctx.send(b.finish(meta, Ack::none())).await?;
    }
    Ok(())
}
