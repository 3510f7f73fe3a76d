//! What the `s3` source knows about objects: which are being read, which are finished (and
//! with which ETag, so an object written again is read again), and which could not be read.
//!
//! The finished (with `on_done = "checkpoint"`) and unreadable objects are also kept in a JSON
//! object in the bucket, written again after each change (writes that pile up while one is on
//! its way become one), so a restart skips them. With `delete` and `move` finished objects
//! leave the prefix, so only unreadable ones left in place are written (and the object is
//! written only when there are such). An object is recorded only after every event of it was
//! acknowledged: a crash before the record is written reads that object again (duplicates),
//! never skips one.

use super::client::{Failure, classify, describe};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use tokio::sync::Notify;

/// Where an object stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not seen, or written again since it was finished.
    New,
    /// Being read now.
    Reading,
    /// Finished with this ETag.
    Done,
    /// Dead-lettered as a whole with this ETag; left where it is.
    Unreadable,
}

/// The persisted part: finished and unreadable objects by key, with their ETags.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub version: u32,
    pub done: BTreeMap<String, String>,
    #[serde(default)]
    pub unreadable: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct Book {
    state: Mutex<(Record, HashSet<String>)>,
    /// Whether finished objects are persisted (`on_done = "checkpoint"`), or only known to
    /// this run (they are deleted or moved, and only a failed delete or move needs them).
    keep_done: bool,
    /// Something to persist.
    pub changed: Notify,
}

impl Book {
    pub fn new(record: Record, keep_done: bool) -> Book {
        Book { state: Mutex::new((record, HashSet::new())), keep_done, changed: Notify::new() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Record, &mut HashSet<String>) -> T) -> T {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (r, reading) = &mut *g;
        f(r, reading)
    }

    pub fn status(&self, key: &str, etag: &str) -> Status {
        self.with(|r, reading| {
            if reading.contains(key) {
                Status::Reading
            } else if r.done.get(key).is_some_and(|e| e == etag) {
                Status::Done
            } else if r.unreadable.get(key).is_some_and(|e| e == etag) {
                Status::Unreadable
            } else {
                Status::New
            }
        })
    }

    /// Whether `key` is recorded as finished or unreadable, under any ETag.
    pub fn knows(&self, key: &str) -> bool {
        self.with(|r, _| r.done.contains_key(key) || r.unreadable.contains_key(key))
    }

    /// Claim `key` for reading; false if it is being read already.
    pub fn start(&self, key: &str) -> bool {
        self.with(|_, reading| reading.insert(key.to_string()))
    }

    /// Reading `key` ended without finishing it: it may be read again.
    pub fn abandon(&self, key: &str) {
        self.with(|_, reading| reading.remove(key));
    }

    pub fn done(&self, key: &str, etag: &str) {
        self.with(|r, reading| {
            reading.remove(key);
            r.unreadable.remove(key);
            r.done.insert(key.to_string(), etag.to_string());
        });
        self.changed.notify_one();
    }

    pub fn unreadable(&self, key: &str, etag: &str) {
        self.with(|r, reading| {
            reading.remove(key);
            r.done.remove(key);
            r.unreadable.insert(key.to_string(), etag.to_string());
        });
        self.changed.notify_one();
    }

    /// Forget finished objects a listing no longer shows (deleted or moved), so the record
    /// stays the size of the bucket.
    pub fn keep_only(&self, listed: &HashSet<&str>) {
        let changed = self.with(|r, _| {
            let before = r.done.len() + r.unreadable.len();
            r.done.retain(|k, _| listed.contains(k.as_str()));
            r.unreadable.retain(|k, _| listed.contains(k.as_str()));
            before != r.done.len() + r.unreadable.len()
        });
        if changed {
            self.changed.notify_one();
        }
    }

    /// What the checkpoint object holds.
    pub fn snapshot(&self) -> Record {
        self.with(|r, _| Record {
            version: 1,
            done: if self.keep_done { r.done.clone() } else { BTreeMap::new() },
            unreadable: r.unreadable.clone(),
        })
    }
}

/// The checkpoint object.
#[derive(Debug, Clone)]
pub struct Store {
    pub client: Client,
    pub bucket: String,
    pub key: String,
}

impl Store {
    /// The record as last written; empty if there is none yet.
    pub async fn load(&self) -> Result<Record, String> {
        let out = match self.client.get_object().bucket(&self.bucket).key(&self.key).send().await {
            Ok(out) => out,
            Err(e) => {
                return match classify(&e) {
                    Failure::Missing => Ok(Record { version: 1, ..Record::default() }),
                    _ => {
                        Err(format!("cannot read the checkpoint `s3://{}/{}`: {}", self.bucket, self.key, describe(&e)))
                    }
                };
            }
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| format!("cannot read the checkpoint `s3://{}/{}`: {e}", self.bucket, self.key))?;
        serde_json::from_slice(&bytes.into_bytes()).map_err(|e| {
            format!(
                "the checkpoint `s3://{}/{}` is not one Phoenix wrote ({e}); delete it to read every object again",
                self.bucket, self.key
            )
        })
    }

    pub async fn save(&self, record: &Record) -> Result<(), String> {
        let body = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map(drop)
            .map_err(|e| describe(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_written_again_is_new() {
        let b = Book::new(Record::default(), true);
        assert_eq!(b.status("a", "e1"), Status::New);
        assert!(b.start("a"));
        assert!(!b.start("a"));
        assert_eq!(b.status("a", "e1"), Status::Reading);
        b.done("a", "e1");
        assert_eq!(b.status("a", "e1"), Status::Done);
        assert_eq!(b.status("a", "e2"), Status::New);
        b.unreadable("a", "e2");
        assert_eq!(b.status("a", "e2"), Status::Unreadable);
        assert_eq!(b.status("a", "e1"), Status::New);
        b.keep_only(&HashSet::from(["b"]));
        assert_eq!(b.snapshot(), Record { version: 1, ..Record::default() });
    }

    /// With `delete` or `move`, finished objects are known to the run but not persisted, so
    /// the checkpoint changes only when an unreadable object is recorded.
    #[test]
    fn without_keep_done_only_unreadable_objects_are_persisted() {
        let b = Book::new(Record::default(), false);
        b.done("a", "e1");
        assert!(b.knows("a"));
        assert_eq!(b.status("a", "e1"), Status::Done);
        assert_eq!(b.snapshot(), Record { version: 1, ..Record::default() });
        b.unreadable("bad", "e2");
        let expected = BTreeMap::from([("bad".to_string(), "e2".to_string())]);
        assert_eq!(b.snapshot(), Record { version: 1, done: BTreeMap::new(), unreadable: expected });
    }
}
