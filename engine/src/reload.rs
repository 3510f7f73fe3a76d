//! Hot reload of `phoenix run`: the files a flow was compiled from, and whether any of them
//! changed since (`--watch` polls this; SIGHUP reloads without asking).

use phoenix_dsl::span::SourceMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// How often `--watch` looks at the files' modification times.
pub const WATCH_POLL: Duration = Duration::from_millis(500);

/// Each file's modification time and size when it was last compiled (`None`: it could not be
/// read, so its appearing counts as a change too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    files: Vec<(PathBuf, Option<(SystemTime, u64)>)>,
}

impl Watched {
    /// Every file of a compilation: the flow and everything it imports (not stdin).
    pub fn of(sources: &SourceMap) -> Watched {
        let files = sources
            .files()
            .map(|(_, f)| PathBuf::from(&f.name))
            .filter(|p| p.as_os_str() != "-")
            .map(|p| {
                let stamp = stamp(&p);
                (p, stamp)
            })
            .collect();
        Watched { files }
    }

    /// Whether any file's modification time or size is not what it was.
    pub fn changed(&self) -> bool {
        self.files.iter().any(|(p, s)| stamp(p) != *s)
    }
}

fn stamp(p: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edited_or_removed_import_is_a_change() {
        let dir = std::env::temp_dir().join(format!("phoenix-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (root, import) = (dir.join("f.phx"), dir.join("shared.phx"));
        std::fs::write(&root, "import \"shared.phx\"\n").expect("write");
        std::fs::write(&import, "schema E { id: int }\n").expect("write");
        let mut sources = SourceMap::new();
        sources.add(root.display().to_string(), "");
        sources.add(import.display().to_string(), "");
        sources.add("-", "");
        let w = Watched::of(&sources);
        assert_eq!(w.files.len(), 2, "stdin is not watched");
        assert!(!w.changed());
        std::fs::write(&import, "schema E { id: int, name: string }\n").expect("write");
        assert!(w.changed(), "a longer file");
        let w = Watched::of(&sources);
        std::fs::remove_file(&import).expect("remove");
        assert!(w.changed(), "a removed file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
