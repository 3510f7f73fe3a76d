//! API keys: who may call `/api/v1`, and whether they may change anything.
//!
//! The key file holds one key per line, `KEY SCOPE`, the scope `read` or `write` (write may
//! also read); blank lines and lines starting with `#` are ignored. Keys are compared in
//! constant time (over SHA-256 digests, so the length of a key does not show either) and never
//! logged. [`KeyFile::watch`] re-reads the file when its modification time or size changes; a
//! file that no longer parses keeps the keys in force and logs the line number at fault.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the API key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    // The line number only: the line holds a key, which is never printed.
    #[error("API key file {path}, line {line}: expected `KEY read` or `KEY write`")]
    Syntax { path: String, line: usize },
}

/// A set of keys, kept as digests.
#[derive(Debug, Clone, Default)]
pub struct Keys(Vec<([u8; 32], Scope)>);

impl Keys {
    /// Parse the text of a key file (`path` only names it in errors).
    pub fn parse(path: &str, text: &str) -> Result<Keys, KeyError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = || KeyError::Syntax { path: path.to_string(), line: i + 1 };
            let mut words = line.split_whitespace();
            let (Some(key), Some(scope), None) = (words.next(), words.next(), words.next()) else {
                return Err(syntax());
            };
            let scope = match scope {
                "read" => Scope::Read,
                "write" => Scope::Write,
                _ => return Err(syntax()),
            };
            keys.push((digest(key.as_bytes()), scope));
        }
        Ok(Keys(keys))
    }

    /// The scope of `presented`, if it is a key. Every key is compared, each over all its
    /// bytes, so the time taken says nothing about which key or how much of one matched.
    pub fn scope(&self, presented: &[u8]) -> Option<Scope> {
        let d = digest(presented);
        let mut found: Option<Scope> = None;
        for (key, scope) in &self.0 {
            let diff = key.iter().zip(&d).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            // `black_box` keeps the optimiser from ending the fold early.
            if std::hint::black_box(diff) == 0 {
                found = found.max(Some(*scope));
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The keys in force, re-read from their file when it changes. Clones share them.
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
    keys: Arc<RwLock<Keys>>,
    /// The file's modification time and size when it was read, taken before reading, so a
    /// change made meanwhile is read again.
    loaded: Option<(SystemTime, u64)>,
}

impl KeyFile {
    /// Read the file now; an unreadable or malformed file is an error (the server does not
    /// start without its keys).
    pub fn load(path: impl Into<PathBuf>) -> Result<KeyFile, KeyError> {
        let path = path.into();
        let loaded = stamp(&path);
        let keys = read(&path)?;
        Ok(KeyFile { path, keys: Arc::new(RwLock::new(keys)), loaded })
    }

    /// [`KeyFile::load`], except that a file not there yet means no keys (every call refused)
    /// until [`KeyFile::watch`] sees it appear: a Kubernetes Secret mounted as optional, created
    /// after the controller.
    pub fn load_when_present(path: impl Into<PathBuf>) -> Result<KeyFile, KeyError> {
        let path = path.into();
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(KeyFile { path, keys: Arc::default(), loaded: None })
            }
            _ => KeyFile::load(path),
        }
    }

    /// No key at all: every call is refused (the API without `--api-keys`).
    pub fn none() -> KeyFile {
        KeyFile { path: PathBuf::new(), keys: Arc::default(), loaded: None }
    }

    pub fn scope(&self, presented: &[u8]) -> Option<Scope> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).scope(presented)
    }

    /// Poll the file every `every` until the task is dropped, and take its keys when its
    /// modification time or size changed and it parses.
    pub async fn watch(self, every: Duration) {
        let mut seen = self.loaded;
        loop {
            tokio::time::sleep(every).await;
            let now = stamp(&self.path);
            if now == seen {
                continue;
            }
            seen = now;
            match read(&self.path) {
                Ok(keys) => {
                    tracing::info!(path = %self.path.display(), keys = keys.0.len(), "API keys reloaded");
                    *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
                }
                Err(e) => tracing::warn!("{e}; keeping the keys in force"),
            }
        }
    }
}

fn read(path: &Path) -> Result<Keys, KeyError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: name.clone(), source })?;
    Keys::parse(&name, &text)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_with_scopes() {
        let k = Keys::parse("keys", "# ops\n\nr3ad-key read\n  wr1te-key   write  \n").expect("parse");
        assert_eq!(k.scope(b"r3ad-key"), Some(Scope::Read));
        assert_eq!(k.scope(b"wr1te-key"), Some(Scope::Write));
        assert_eq!(k.scope(b"wr1te-ke"), None);
        assert_eq!(k.scope(b"wr1te-key "), None);
        assert_eq!(k.scope(b""), None);
        // The same key listed twice gets the wider scope.
        let k = Keys::parse("keys", "k read\nk write\n").expect("parse");
        assert_eq!(k.scope(b"k"), Some(Scope::Write));
    }

    #[test]
    fn syntax_errors_name_the_line_but_not_the_key() {
        for (text, line) in [("a read\nsecret-key admin\n", 2), ("lonely-secret\n", 1), ("x read extra\n", 1)] {
            let e = Keys::parse("keys.txt", text).expect_err(text).to_string();
            assert_eq!(e, format!("API key file keys.txt, line {line}: expected `KEY read` or `KEY write`"));
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[tokio::test]
    async fn the_file_is_re_read_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("phoenix-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("keys");
        std::fs::write(&path, "old read\n").expect("write");
        let keys = KeyFile::load(&path).expect("load");
        let watcher = tokio::spawn(keys.clone().watch(Duration::from_millis(20)));
        assert_eq!(keys.scope(b"old"), Some(Scope::Read));
        // A different size, so the change shows even where mtimes are coarse.
        std::fs::write(&path, "new-key write\n").expect("write");
        let changed = async {
            while keys.scope(b"new-key").is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), changed).await.expect("reloaded");
        assert_eq!(keys.scope(b"old"), None);
        // A broken file keeps the keys in force.
        std::fs::write(&path, "broken\n").expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(keys.scope(b"new-key"), Some(Scope::Write));
        watcher.abort();
        assert_eq!(KeyFile::none().scope(b""), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An optional Secret mounted before it exists: no keys, then its keys once it appears.
    #[tokio::test]
    async fn a_key_file_that_appears_later_is_read() {
        let dir = std::env::temp_dir().join(format!("phoenix-keys-later-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("keys");
        assert!(KeyFile::load(&path).is_err(), "`load` needs the file");
        let keys = KeyFile::load_when_present(&path).expect("absent is allowed");
        assert_eq!(keys.scope(b"later"), None);
        let watcher = tokio::spawn(keys.clone().watch(Duration::from_millis(20)));
        std::fs::write(&path, "later write\n").expect("write");
        let appeared = async {
            while keys.scope(b"later").is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), appeared).await.expect("read once it appeared");
        watcher.abort();
        std::fs::write(&path, "broken\n").expect("write");
        assert!(KeyFile::load_when_present(&path).is_err(), "a present file must parse");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
