//! The one durable record log both relays keep their per-replica offset maps in.
//!
//! A file is a sequence of records `[len u32 LE][crc32 u32 LE][payload]`; what a payload means
//! is the relay's business (Pika stores whole map states, Redis map points and tips). This
//! module owns the framing, reading records back, and getting bytes to disk in order.
//!
//! Two levels of durability, because they cost very different amounts:
//!
//! * **Written**: [`RecordLog::append`] and [`RecordLog::replace`] hand the bytes to the kernel
//!   before they return (a `write(2)` of a few dozen bytes, microseconds). From then on the
//!   bytes survive the proxy being killed at any instant, so a relay that appends a record
//!   *before* it sends what the record describes (write-ahead) can resume every replica exactly
//!   after a `SIGKILL`.
//! * **Synced**: a thread per file runs `fdatasync` (and syncs the directory after a
//!   replacement) behind the relay, coalescing everything written meanwhile into one call, at
//!   most once per `min_spacing` unless somebody waits. [`durable`] waits for a sequence number
//!   to be synced; only what must survive a power loss (the master's view of acknowledged
//!   offsets, the start of a new session) waits for it.
//!
//! A replacement (compaction) writes `<path>.tmp` and renames it over the file inline, without
//! waiting for the disk: a power loss right after it may leave an empty or torn file, which
//! every loader rejects (one full sync), never a wrong offset.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::{names::STATE_WRITE_BYTES, STATE_WRITE_SECONDS};
use crate::state_dir::sync_dir;

/// Bytes before a record's payload.
pub const RECORD_HEADER_LEN: usize = 8;

/// The syncing thread only ever blocks in file system calls; it needs little stack.
const SYNCER_STACK: usize = 128 * 1024;

/// What the syncing thread has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every write up to this sequence number is synced to disk.
    pub durable: u64,
    /// The first error, after which nothing more is written or synced.
    pub failed: Option<Arc<str>>,
}

/// Appends one record holding `payload` to `out`.
pub fn put_record(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// One step of reading a log's bytes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A whole record whose checksum matches, starting at byte `at`.
    Valid { at: usize, payload: &'a [u8] },
    /// The bytes from `at` end before the record does: the last write was cut short.
    Torn { at: usize },
    /// The record at `at` is not one this module wrote (`why` says how).
    Corrupt { at: usize, why: String },
}

/// Reads records from `bytes`; stops after the first torn or corrupt one. `max_len` bounds a
/// payload's length (a larger length field is corruption, not a huge record).
pub fn records(bytes: &[u8], max_len: usize) -> impl Iterator<Item = Record<'_>> {
    let mut pos = 0;
    let mut stopped = false;
    std::iter::from_fn(move || {
        if stopped || pos >= bytes.len() {
            return None;
        }
        let at = pos;
        let rest = &bytes[at..];
        let Some((len, crc)) = header(rest) else {
            stopped = true;
            return Some(Record::Torn { at });
        };
        if len == 0 || len > max_len {
            stopped = true;
            return Some(Record::Corrupt {
                at,
                why: format!("record length {len} at byte {at}"),
            });
        }
        let Some(payload) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
            stopped = true;
            return Some(Record::Torn { at });
        };
        if crc32fast::hash(payload) != crc {
            stopped = true;
            return Some(Record::Corrupt {
                at,
                why: format!("checksum mismatch at byte {at}"),
            });
        }
        pos = at + RECORD_HEADER_LEN + len;
        Some(Record::Valid { at, payload })
    })
}

fn header(bytes: &[u8]) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    Some((len as usize, crc))
}

/// One replica's log file, written by the relay and synced by a thread of its own.
#[derive(Debug)]
pub struct RecordLog {
    path: PathBuf,
    file: Option<Arc<File>>,
    /// Sequence number of the last write handed to the kernel.
    written: u64,
    failed: Option<Arc<str>>,
    shared: Arc<Shared>,
    progress: watch::Receiver<Progress>,
}

#[derive(Debug)]
struct Shared {
    todo: Mutex<Todo>,
    wake: Condvar,
}

/// What the syncing thread has yet to do.
#[derive(Debug, Default)]
struct Todo {
    /// The newest written sequence number and the file holding it.
    unsynced: Option<(u64, Arc<File>)>,
    /// A replacement or removal happened: the directory needs a sync too.
    directory: bool,
    /// Somebody waits: skip the pause between syncs.
    urgent: bool,
    /// The log is gone: finish what is left and end.
    closed: bool,
}

fn lock(m: &Mutex<Todo>) -> MutexGuard<'_, Todo> {
    // A poisoned lock only means the syncer panicked; the flags are still meaningful.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RecordLog {
    /// Creates (or atomically replaces) the file at `path` with `contents`; syncs happen at
    /// most once per `min_spacing` unless a caller waits ([`RecordLog::urge`]).
    pub fn create(path: &Path, contents: &[u8], min_spacing: Duration) -> io::Result<RecordLog> {
        let mut log = RecordLog::start(path, min_spacing)?;
        log.replace(contents)?;
        Ok(log)
    }

    /// The log's state and its syncing thread, before any file is open.
    fn start(path: &Path, min_spacing: Duration) -> io::Result<RecordLog> {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        fs::create_dir_all(&dir)?;
        let (report, progress) = watch::channel(Progress::default());
        let shared = Arc::new(Shared {
            todo: Mutex::new(Todo::default()),
            wake: Condvar::new(),
        });
        let syncer = Syncer {
            dir,
            shared: shared.clone(),
            report,
            min_spacing,
        };
        std::thread::Builder::new()
            .name("record-log-sync".into())
            .stack_size(SYNCER_STACK)
            .spawn(move || syncer.run())?;
        Ok(RecordLog {
            path: path.to_path_buf(),
            file: None,
            written: 0,
            failed: None,
            shared,
            progress,
        })
    }

    /// Appends `bytes` (whole records) to the file; returns the write's sequence number. The
    /// bytes survive a crash of the process once this returns.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<u64> {
        self.check()?;
        let Some(file) = self.file.clone() else {
            return Err(self.fail("the log file is closed".into()));
        };
        if let Err(e) = (&*file).write_all(bytes) {
            return Err(self.fail(format!("cannot write {}: {e}", self.path.display())));
        }
        metrics::counter!(STATE_WRITE_BYTES).increment(bytes.len() as u64);
        self.written += 1;
        self.schedule(file, false);
        Ok(self.written)
    }

    /// Replaces the whole file by `bytes` (a compaction or a fresh state); returns the write's
    /// sequence number.
    pub fn replace(&mut self, bytes: &[u8]) -> io::Result<u64> {
        self.check()?;
        let mut tmp = self.path.as_os_str().to_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            fs::rename(&tmp, &self.path)?;
            Ok::<_, io::Error>(file)
        })();
        let file = match written {
            Ok(file) => Arc::new(file),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(self.fail(format!("cannot write {}: {e}", self.path.display())));
            }
        };
        self.file = Some(file.clone());
        metrics::counter!(STATE_WRITE_BYTES).increment(bytes.len() as u64);
        self.written += 1;
        self.schedule(file, true);
        Ok(self.written)
    }

    /// Deletes the file (the replica moved on); the directory is synced behind.
    pub fn remove(mut self) -> io::Result<()> {
        self.file = None;
        let removed = match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        let mut todo = lock(&self.shared.todo);
        todo.unsynced = None;
        todo.directory = true;
        drop(todo);
        self.shared.wake.notify_one();
        removed
    }

    /// Sequence number of the last write.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The first write or sync error, if any.
    pub fn failed(&self) -> Option<Arc<str>> {
        self.failed
            .clone()
            .or_else(|| self.progress.borrow().failed.clone())
    }

    /// A receiver of the sync progress, for waiting without holding the log.
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Asks the syncing thread to skip its pause: somebody waits for the disk.
    pub fn urge(&self) {
        lock(&self.shared.todo).urgent = true;
        self.shared.wake.notify_one();
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blocks until every write so far is synced, for up to `timeout`.
    #[cfg(test)]
    pub fn wait_synced(&self, timeout: Duration) -> io::Result<()> {
        self.urge();
        let until = Instant::now() + timeout;
        loop {
            if let Some(why) = self.failed() {
                return Err(io::Error::other(why.to_string()));
            }
            if self.progress.borrow().durable >= self.written {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "not synced in time",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn check(&self) -> io::Result<()> {
        match self.failed() {
            Some(why) => Err(io::Error::other(why.to_string())),
            None => Ok(()),
        }
    }

    fn fail(&mut self, why: String) -> io::Error {
        self.file = None;
        self.failed = Some(Arc::from(why.as_str()));
        io::Error::other(why)
    }

    fn schedule(&self, file: Arc<File>, directory: bool) {
        let mut todo = lock(&self.shared.todo);
        todo.unsynced = Some((self.written, file));
        todo.directory |= directory;
        drop(todo);
        self.shared.wake.notify_one();
    }
}

impl Drop for RecordLog {
    fn drop(&mut self) {
        lock(&self.shared.todo).closed = true;
        self.shared.wake.notify_one();
    }
}

/// Waits until write `seq` (or a later one) is synced; the error when a write or sync failed
/// first.
pub async fn durable(progress: &mut watch::Receiver<Progress>, seq: u64) -> Result<(), Arc<str>> {
    loop {
        {
            let now = progress.borrow_and_update();
            if let Some(why) = &now.failed {
                return Err(why.clone());
            }
            if now.durable >= seq {
                return Ok(());
            }
        }
        if progress.changed().await.is_err() {
            return Err(Arc::from("the record log's sync thread has stopped"));
        }
    }
}

/// The syncing thread's side.
struct Syncer {
    dir: PathBuf,
    shared: Arc<Shared>,
    report: watch::Sender<Progress>,
    min_spacing: Duration,
}

impl Syncer {
    fn run(self) {
        let mut last_sync: Option<Instant> = None;
        loop {
            let (unsynced, directory) = {
                let mut todo = lock(&self.shared.todo);
                loop {
                    let due = todo.unsynced.is_some() || todo.directory;
                    if !due && todo.closed {
                        return;
                    }
                    if due {
                        let pause = last_sync
                            .map(|at| self.min_spacing.saturating_sub(at.elapsed()))
                            .unwrap_or_default();
                        if pause.is_zero() || todo.urgent || todo.closed {
                            break;
                        }
                        todo = self
                            .shared
                            .wake
                            .wait_timeout(todo, pause)
                            .map(|(g, _)| g)
                            .unwrap_or_else(|p| p.into_inner().0);
                        continue;
                    }
                    todo = self
                        .shared
                        .wake
                        .wait(todo)
                        .unwrap_or_else(|p| p.into_inner());
                }
                todo.urgent = false;
                (todo.unsynced.take(), std::mem::take(&mut todo.directory))
            };
            let mut result = Ok(());
            let started = Instant::now();
            if let Some((_, file)) = &unsynced {
                result = file.sync_data();
            }
            if directory && result.is_ok() {
                sync_dir(&self.dir);
            }
            last_sync = Some(Instant::now());
            match result {
                Ok(()) => {
                    metrics::histogram!(STATE_WRITE_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    if let Some((seq, _)) = unsynced {
                        self.report.send_modify(|p| p.durable = p.durable.max(seq));
                    }
                }
                Err(e) => {
                    self.report.send_modify(|p| {
                        p.failed = Some(Arc::from(format!("cannot sync the record log: {e}")))
                    });
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            put_record(&mut out, p);
        }
        out
    }

    #[test]
    fn records_read_back_and_a_torn_or_flipped_tail_is_reported() {
        let bytes = framed(&[b"one", b"two!"]);
        let read: Vec<_> = records(&bytes, 64).collect();
        assert_eq!(
            read,
            vec![
                Record::Valid {
                    at: 0,
                    payload: b"one"
                },
                Record::Valid {
                    at: 11,
                    payload: b"two!"
                },
            ]
        );
        for cut in 12..bytes.len() {
            let read: Vec<_> = records(&bytes[..cut], 64).collect();
            assert_eq!(read.last(), Some(&Record::Torn { at: 11 }), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[13] ^= 1;
        assert!(matches!(
            records(&flipped, 64).last(),
            Some(Record::Corrupt { at: 11, .. })
        ));
        assert!(matches!(
            records(&bytes, 3).last(),
            Some(Record::Corrupt { at: 11, .. })
        ));
    }

    #[test]
    fn appends_are_in_the_file_when_append_returns_and_synced_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let mut log = RecordLog::create(&path, b"head|", Duration::ZERO).unwrap();
        log.append(b"one|").unwrap();
        // No wait: the bytes are in the file already (the write-ahead guarantee).
        assert_eq!(fs::read(&path).unwrap(), b"head|one|");
        let seq = log.append(b"two|").unwrap();
        assert_eq!(seq, 3);
        log.wait_synced(WAIT).unwrap();
        assert_eq!(log.watch().borrow().durable, 3);
        log.replace(b"new|").unwrap();
        log.append(b"three|").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new|three|");
        assert!(!dir.path().join("r.log.tmp").exists());
        log.remove().unwrap();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_wait_for_the_disk_is_not_held_up_by_the_pause_between_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let mut log = RecordLog::create(&path, b"", Duration::from_secs(3600)).unwrap();
        let mut rx = log.watch();
        tokio::time::timeout(WAIT, durable(&mut rx, log.written()))
            .await
            .expect("the first sync is not paused")
            .unwrap();
        let next = log.append(b"b").unwrap();
        // Nobody waits: the sync waits out its pause.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.borrow().durable < next);
        log.urge();
        tokio::time::timeout(WAIT, durable(&mut rx, next))
            .await
            .expect("an urged sync skips the hour-long pause")
            .unwrap();
    }

    #[test]
    fn a_failed_write_fails_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        let path = sub.join("r.log");
        let mut log = RecordLog::create(&path, b"x", Duration::ZERO).unwrap();
        fs::remove_dir_all(&sub).unwrap();
        let err = log.replace(b"y").unwrap_err();
        assert!(err.to_string().contains("cannot write"), "{err}");
        assert!(log.append(b"z").is_err());
        assert!(log.failed().is_some());
    }
}
