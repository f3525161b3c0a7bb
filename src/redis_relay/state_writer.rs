//! The disk work of one replica's state file, done on a thread of its own.
//!
//! Writing the offset map costs a `write` and an `fdatasync` per batch, and compacting it a
//! temporary file, two `fsync`s and a rename: together 1–9 ms on a VM's disk, once or twice a
//! second. Done inline, that time was taken out of the relay loop, and every entry the master
//! sent meanwhile waited for the disk. Here the relay hands over bytes and goes on; one thread
//! per file applies the jobs strictly in the order they were handed in, so the file on disk is
//! always a state the relay once handed in (the format itself makes every prefix of appended
//! records a valid, older state). Each job gets a sequence number, and the newest one on disk is
//! published, for the places that must not go on before their state is durable.
//!
//! After the first failed write the thread stops writing (the file may end in a torn record,
//! which the loader rejects: one full resync, never a wrong offset) and reports the error;
//! removing the file still works.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;
use std::time::Instant;
use tokio::sync::watch;

use crate::metrics::STATE_WRITE_SECONDS;
use crate::state_dir::{replace_file, sync_dir};
use metrics::histogram;

/// The writer thread only ever blocks in file system calls; it needs little stack.
const WRITER_STACK: usize = 128 * 1024;

/// What the writer has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every job up to this sequence number is on disk (synced).
    pub durable: u64,
    /// The first write error, after which nothing more is written.
    pub failed: Option<Arc<str>>,
}

enum Job {
    /// Append these bytes to the file.
    Append(u64, Vec<u8>),
    /// Atomically replace the whole file with these bytes.
    Replace(u64, Vec<u8>),
    /// Delete the file; the thread ends.
    Remove(u64),
}

/// Hands jobs for one state file to its writer thread.
#[derive(Debug)]
pub struct StateWriter {
    jobs: mpsc::Sender<Job>,
    progress: watch::Receiver<Progress>,
    /// Sequence number of the last job handed in.
    submitted: u64,
}

impl StateWriter {
    /// Starts the writer thread for the file at `path` (in `dir`).
    pub fn start(dir: &Path, path: &Path) -> io::Result<StateWriter> {
        let (jobs, queue) = mpsc::channel();
        let (report, progress) = watch::channel(Progress::default());
        let mut disk = Disk {
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            file: None,
        };
        std::thread::Builder::new()
            .name("state-writer".into())
            .stack_size(WRITER_STACK)
            .spawn(move || disk.run(&queue, &report))?;
        Ok(StateWriter {
            jobs,
            progress,
            submitted: 0,
        })
    }

    /// Queues `bytes` to be appended (then synced); returns the job's sequence number.
    pub fn append(&mut self, bytes: Vec<u8>) -> u64 {
        self.submit(|seq| Job::Append(seq, bytes))
    }

    /// Queues an atomic replacement of the whole file; returns the job's sequence number.
    pub fn replace(&mut self, bytes: Vec<u8>) -> u64 {
        self.submit(|seq| Job::Replace(seq, bytes))
    }

    /// Queues the file's deletion after every job before it; returns its sequence number. The
    /// thread ends once it is done.
    pub fn remove(&mut self) -> u64 {
        self.submit(Job::Remove)
    }

    fn submit(&mut self, job: impl FnOnce(u64) -> Job) -> u64 {
        self.submitted += 1;
        // A send fails only when the thread is gone, which it is only after a removal or a
        // panic; `failed` then says so.
        let _ = self.jobs.send(job(self.submitted));
        self.submitted
    }

    /// Sequence number of the last job handed in.
    pub fn submitted(&self) -> u64 {
        self.submitted
    }

    /// What is on disk now.
    #[cfg(test)]
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// The first write error, if any (or that the thread is gone).
    pub fn failed(&self) -> Option<Arc<str>> {
        let progress = self.progress.borrow();
        if progress.failed.is_some() {
            return progress.failed.clone();
        }
        self.progress
            .has_changed()
            .is_err()
            .then(|| Arc::from("the state writer thread has stopped"))
    }

    /// A receiver of the progress, for waiting without holding the writer.
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Blocks until every job handed in is on disk, for up to `timeout`.
    #[cfg(test)]
    pub fn wait_blocking(&self, timeout: Duration) -> io::Result<()> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(why) = self.failed() {
                return Err(io::Error::other(why.to_string()));
            }
            if self.progress.borrow().durable >= self.submitted {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the state file was not written in time",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Waits until job `seq` (or a later one) is on disk; the error when a write failed first.
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
            return Err(Arc::from("the state writer thread has stopped"));
        }
    }
}

/// The writer thread's side.
struct Disk {
    dir: PathBuf,
    path: PathBuf,
    /// The file opened for appending, once it exists.
    file: Option<File>,
}

impl Disk {
    fn run(&mut self, queue: &mpsc::Receiver<Job>, report: &watch::Sender<Progress>) {
        let mut failed = false;
        while let Ok(first) = queue.recv() {
            // Everything queued meanwhile goes out with one sync at the end.
            let started = Instant::now();
            let mut batch = vec![first];
            batch.extend(queue.try_iter());
            let mut done = None;
            let mut unsynced = false;
            let mut removed = false;
            let mut result = Ok(());
            for job in batch {
                let seq = match job {
                    Job::Remove(seq) => {
                        self.file = None;
                        match fs::remove_file(&self.path) {
                            Err(e) if e.kind() != io::ErrorKind::NotFound && !failed => {
                                result = Err(e)
                            }
                            _ => sync_dir(&self.dir),
                        }
                        unsynced = false;
                        removed = true;
                        seq
                    }
                    _ if failed || result.is_err() => continue,
                    Job::Append(seq, bytes) => {
                        result = self.append(&bytes);
                        unsynced = true;
                        seq
                    }
                    Job::Replace(seq, bytes) => {
                        result = self.replace(&bytes);
                        unsynced = false;
                        seq
                    }
                };
                done = Some(seq);
                if removed {
                    break;
                }
            }
            if unsynced && result.is_ok() {
                if let Some(f) = &self.file {
                    result = f.sync_data();
                }
            }
            if result.is_ok() && !removed && !failed {
                histogram!(STATE_WRITE_SECONDS).record(started.elapsed().as_secs_f64());
            }
            report.send_modify(|p| match (&result, failed) {
                (Err(e), false) => {
                    p.failed = Some(Arc::from(format!(
                        "cannot write {}: {e}",
                        self.path.display()
                    )))
                }
                (Ok(()), false) => p.durable = done.unwrap_or(p.durable).max(p.durable),
                _ => {}
            });
            failed |= result.is_err();
            if removed {
                return;
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(OpenOptions::new().append(true).open(&self.path)?);
        }
        match self.file.as_mut() {
            Some(f) => f.write_all(bytes),
            None => Ok(()),
        }
    }

    /// Replace the file atomically and durably ([`replace_file`]), then append to the new one.
    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file = None;
        fs::create_dir_all(&self.dir)?;
        replace_file(&self.path, bytes)?;
        self.file = Some(OpenOptions::new().append(true).open(&self.path)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn jobs_land_in_order_and_removal_ends_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let mut w = StateWriter::start(dir.path(), &path).unwrap();
        w.replace(b"head|".to_vec());
        w.append(b"one|".to_vec());
        let seq = w.append(b"two|".to_vec());
        w.wait_blocking(WAIT).unwrap();
        assert_eq!(w.progress().durable, seq);
        assert_eq!(fs::read(&path).unwrap(), b"head|one|two|");
        w.replace(b"new|".to_vec());
        w.append(b"three|".to_vec());
        w.wait_blocking(WAIT).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new|three|");
        assert!(!dir.path().join("s.state.tmp").exists());
        let seq = w.remove();
        let until = Instant::now() + WAIT;
        while w.failed().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!path.exists());
        assert_eq!(w.progress().durable, seq);
        assert!(w.failed().is_some(), "the thread is gone after a removal");
    }

    #[test]
    fn a_failed_write_is_reported_and_nothing_later_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let mut w = StateWriter::start(dir.path(), &path).unwrap();
        // Appending to a file that was never created fails.
        w.append(b"orphan".to_vec());
        let err = w.wait_blocking(WAIT).unwrap_err();
        assert!(err.to_string().contains("cannot write"), "{err}");
        w.replace(b"head".to_vec());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!path.exists());
        assert_eq!(w.progress().durable, 0);
    }

    #[tokio::test]
    async fn waiting_for_a_job_returns_once_it_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let mut w = StateWriter::start(dir.path(), &path).unwrap();
        let seq = w.replace(b"head".to_vec());
        let mut rx = w.watch();
        tokio::time::timeout(WAIT, durable(&mut rx, seq))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"head");
    }
}
