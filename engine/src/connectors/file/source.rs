//! The `file` source: NDJSON or JSON-array files (the batch-upload path), both streamed in
//! chunks, so a file of any size is read in the usual memory.

use crate::connectors::lines::{ArrayError, Constant, Origin, read_array, read_ndjson};
use crate::connectors::{BoxFuture, ConnectorError, Source, SourceContext};
use crate::exec::ack::Ack;
use crate::exec::batch::RawBatchBuilder;
use crate::options::Options;
use bytes::Bytes;
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
                let origin =
                    Origin { constants: vec![("file", Constant::Str(Arc::from(name.as_str())))], ..Origin::default() };
                let stopped = if json_array {
                    match read_array(file, origin, &ctx).await {
                        Ok(r) => r.is_err(),
                        Err(ArrayError::Io(e)) => return Err(io(e)),
                        Err(e @ ArrayError::Shape(_)) => not_an_array(&name, &e, &ctx).await.is_err(),
                    }
                } else {
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

/// A file that is not one JSON array: one dead letter naming it and saying why (its elements
/// before the damage were sent as events).
async fn not_an_array(name: &str, e: &ArrayError, ctx: &SourceContext) -> Result<(), crate::connectors::Stopped> {
    let mut b = RawBatchBuilder::default().finish(Vec::new(), Ack::none());
    let payload = serde_json::json!({ "file": name }).to_string();
    b.rejected.push((Bytes::from(payload), format!("`{name}` is {e}")));
    ctx.send(b).await
}
