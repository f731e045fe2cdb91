//! Hash-partitioned spill files, so that reconciliation holds one bucket
//! of mastery keys in memory at a time instead of the whole graph.
//!
//! Every side of the diff (Postgres rows, outbox keys, graph edges, topic
//! records) is split by the same hash of the user id, so one bucket of each
//! side holds everything the diff needs for those users. Partitioning by
//! hash rather than sorting keeps the three servers' orderings (collations,
//! Neo4j's string order) out of the correctness argument: a key is looked
//! up, never merged by position.

use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A spill file could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// The file system refused (full disk, no temporary directory).
    #[error("reconcile spill file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A record did not encode or decode.
    #[error("reconcile spill file {path}: {source}")]
    Encoding {
        /// The file.
        path: PathBuf,
        /// Why.
        source: postcard::Error,
    },
}

/// Bytes of strings one spilled record may carry.
const SCRATCH: usize = 1 << 20;

/// The bucket of a user's keys: the same on every side of one run.
pub fn bucket_of(user: &str, buckets: usize) -> usize {
    let mut h = DefaultHasher::new();
    user.hash(&mut h);
    (h.finish() % buckets.max(1) as u64) as usize
}

/// A temporary directory of bucket files, removed when dropped (also when
/// the reconciliation fails).
pub struct Spill {
    dir: tempfile::TempDir,
    buckets: usize,
}

impl Spill {
    /// A new spill of `buckets` buckets under the system's temporary
    /// directory (`TMPDIR`).
    pub fn new(buckets: usize) -> Result<Self, SpillError> {
        let dir = tempfile::Builder::new()
            .prefix("novyra-reconcile-")
            .tempdir()
            .map_err(|source| SpillError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        Ok(Self {
            dir,
            buckets: buckets.max(1),
        })
    }

    /// How many buckets.
    pub fn buckets(&self) -> usize {
        self.buckets
    }

    /// Bytes on disk now, for the log: what a reconciliation needs free in
    /// `TMPDIR`.
    pub fn bytes(&self) -> u64 {
        std::fs::read_dir(self.dir.path())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    fn path(&self, side: &str, bucket: usize) -> PathBuf {
        self.dir.path().join(format!("{side}-{bucket}"))
    }

    /// A writer that spreads one side's records over the buckets. Only one
    /// side is written at a time, so at most `buckets` files are open.
    pub fn writer<T: Serialize>(&self, side: &str) -> Result<SideWriter<T>, SpillError> {
        let files = (0..self.buckets)
            .map(|b| {
                let path = self.path(side, b);
                File::create(&path)
                    .map(|f| (path.clone(), BufWriter::with_capacity(64 * 1024, f)))
                    .map_err(|source| SpillError::Io { path, source })
            })
            .collect::<Result<_, _>>()?;
        Ok(SideWriter {
            files,
            written: 0,
            _t: PhantomData,
        })
    }

    /// Every record of one side in one bucket, in the order written.
    pub fn read<T: DeserializeOwned>(
        &self,
        side: &str,
        bucket: usize,
    ) -> Result<Vec<T>, SpillError> {
        let mut out = Vec::new();
        self.for_each(side, bucket, |item| {
            out.push(item);
            Ok::<_, SpillError>(())
        })?;
        Ok(out)
    }

    /// Hands every record of one side in one bucket to `f`, in the order
    /// written, holding one at a time: a topic's bucket may hold many
    /// superseded records per key.
    pub fn for_each<T: DeserializeOwned, E: From<SpillError>>(
        &self,
        side: &str,
        bucket: usize,
        mut f: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E> {
        let path = self.path(side, bucket);
        let io = |source| SpillError::Io {
            path: path.clone(),
            source,
        };
        let mut r = BufReader::with_capacity(64 * 1024, File::open(&path).map_err(io)?);
        // Room for the strings of one record (keys, ids); byte payloads
        // are read element by element and need none.
        let mut scratch = vec![0_u8; SCRATCH];
        while !r.fill_buf().map_err(io)?.is_empty() {
            let (item, _) = postcard::from_io((&mut r, &mut scratch[..])).map_err(|source| {
                SpillError::Encoding {
                    path: path.clone(),
                    source,
                }
            })?;
            f(item)?;
        }
        Ok(())
    }

    /// Writes one bucket of a side whole (a side derived bucket by bucket).
    pub fn write_bucket<T: Serialize>(
        &self,
        side: &str,
        bucket: usize,
        items: &[T],
    ) -> Result<(), SpillError> {
        let path = self.path(side, bucket);
        let io = |source| SpillError::Io {
            path: path.clone(),
            source,
        };
        let mut w = BufWriter::new(File::create(&path).map_err(io)?);
        for item in items {
            postcard::to_io(item, &mut w).map_err(|source| SpillError::Encoding {
                path: path.clone(),
                source,
            })?;
        }
        w.flush().map_err(io)
    }
}

/// Writes one side of the diff, each record to its user's bucket.
pub struct SideWriter<T> {
    files: Vec<(PathBuf, BufWriter<File>)>,
    written: u64,
    _t: PhantomData<fn(&T)>,
}

impl<T: Serialize> SideWriter<T> {
    /// Appends a record of `user` to its bucket.
    pub fn push(&mut self, user: &str, item: &T) -> Result<(), SpillError> {
        let b = bucket_of(user, self.files.len());
        self.push_to(b, item)
    }

    /// Appends a record to bucket `b`.
    pub fn push_to(&mut self, b: usize, item: &T) -> Result<(), SpillError> {
        let (path, w) = &mut self.files[b];
        postcard::to_io(item, w).map_err(|source| SpillError::Encoding {
            path: path.clone(),
            source,
        })?;
        self.written += 1;
        Ok(())
    }

    /// Flushes and closes every bucket file; returns how many records.
    pub fn finish(self) -> Result<u64, SpillError> {
        for (path, mut w) in self.files {
            w.flush()
                .map_err(|source| SpillError::Io { path, source })?;
        }
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_their_users_bucket_in_order() {
        let spill = Spill::new(3).expect("spill");
        let mut w = spill
            .writer::<(String, i64, Option<Vec<u8>>)>("t")
            .expect("writer");
        let users = ["ann", "bob", "cy", "dee", "ann", "bob"];
        for (i, u) in users.iter().enumerate() {
            let payload = (i % 2 == 0).then(|| vec![i as u8; i]);
            w.push(u, &((*u).to_owned(), i as i64, payload))
                .expect("push");
        }
        assert_eq!(w.finish().expect("finish"), users.len() as u64);
        let mut seen = 0;
        for b in 0..spill.buckets() {
            let items: Vec<(String, i64, Option<Vec<u8>>)> = spill.read("t", b).expect("read");
            for pair in items.windows(2) {
                assert!(pair[0].1 < pair[1].1, "write order kept: {items:?}");
            }
            for (u, i, payload) in &items {
                assert_eq!(bucket_of(u, 3), b);
                assert_eq!(*payload, (i % 2 == 0).then(|| vec![*i as u8; *i as usize]));
            }
            seen += items.len();
        }
        assert_eq!(seen, users.len());
    }

    #[test]
    fn large_payloads_come_back_and_a_cut_file_is_an_error_naming_it() {
        let spill = Spill::new(1).expect("spill");
        let big = (0..300_000).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
        let item = ("k".repeat(10_000), Some(big));
        spill
            .write_bucket("t", 0, &[item.clone(), item.clone()])
            .expect("write");
        let back: Vec<(String, Option<Vec<u8>>)> = spill.read("t", 0).expect("read");
        assert_eq!(back, vec![item.clone(), item]);

        let path = spill.path("t", 0);
        let len = std::fs::metadata(&path).expect("meta").len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(len - 10).expect("cut");
        let err = spill
            .read::<(String, Option<Vec<u8>>)>("t", 0)
            .expect_err("a cut record");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
