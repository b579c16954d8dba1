//! The `file` sink: JSON lines appended to a local file, rotated by size and/or age into
//! `<path>.1` (newest) … `<path>.<keep>` (oldest), fsynced per policy. The chain simply
//! continues in the new file. Blocking file I/O runs on tokio's blocking pool, one call
//! per flush, so the async workers never wait on the disk.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::chain::{last_valid_line, ChainTip, Tail};
use super::config::{FileSinkConfig, FsyncPolicy};
use super::sink::{Batch, Flushed, Pending, Sink};
use super::AuditError;

/// The file sink. `core` is only absent while a flush runs on the blocking pool.
pub(crate) struct FileSink {
    core: Option<FileCore>,
    cfg: FileSinkConfig,
    /// Held while the sink lives: a second process cannot append to the same chain.
    _lock: PathLock,
}

/// An exclusive advisory lock on `<path>.lock` (which holds the owner's pid).
struct PathLock {
    _file: File,
}

struct FileCore {
    cfg: FileSinkConfig,
    file: Option<OpenFile>,
    pending: Pending,
    /// When the first unsynced line was written (`None`: everything is synced).
    dirty_since: Option<Instant>,
}

struct OpenFile {
    file: File,
    size: u64,
    created: SystemTime,
}

impl FileSink {
    /// Opens (creating) the file, trims a torn last line left by a crash, and returns the
    /// sink with the last valid chain link found in the file or, if it has none, in the
    /// newest rotated file.
    pub fn open(cfg: &FileSinkConfig) -> Result<(FileSink, Option<ChainTip>), AuditError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuditError::Io { path, source }
        };
        let lock = lock_path(&cfg.path)?;
        let existed = cfg.path.exists();
        let file = open_append(&cfg.path).map_err(io_err(&cfg.path))?;
        if !existed && cfg.fsync != FsyncPolicy::Never {
            sync_parent(&cfg.path).map_err(io_err(&cfg.path))?;
        }
        if let Some(cut) = trim_torn_tail(&cfg.path).map_err(io_err(&cfg.path))? {
            tracing::warn!(
                path = %cfg.path.display(),
                bytes = cut,
                "audit file ended in an incomplete line (crash during write?); removed it"
            );
        }
        let mut tip = resume_point(&cfg.path)?;
        if tip.is_none() {
            tip = resume_point(&rotated_path(&cfg.path, 1))?;
        }
        let open = OpenFile::new(file).map_err(io_err(&cfg.path))?;
        let core = FileCore {
            cfg: cfg.clone(),
            file: Some(open),
            pending: Pending::default(),
            dirty_since: None,
        };
        Ok((
            FileSink {
                core: Some(core),
                cfg: cfg.clone(),
                _lock: lock,
            },
            tip,
        ))
    }
}

impl Sink for FileSink {
    fn accept(&mut self, batch: Arc<Batch>) {
        if let Some(core) = &mut self.core {
            core.pending.push(batch);
        }
    }

    fn is_due(&self, now: Instant) -> bool {
        self.core
            .as_ref()
            .is_some_and(|c| !c.pending.is_empty() || c.sync_deadline().is_some_and(|d| now >= d))
    }

    fn deadline(&self) -> Option<Instant> {
        self.core.as_ref().and_then(FileCore::sync_deadline)
    }

    async fn flush(&mut self, closing: bool) -> Flushed {
        let Some(mut core) = self.core.take() else {
            self.core = Some(FileCore::fresh(&self.cfg));
            return Flushed {
                delivered: 0,
                error: Some("file sink state was lost".into()),
            };
        };
        match tokio::task::spawn_blocking(move || {
            let out = core.flush(closing);
            (core, out)
        })
        .await
        {
            Ok((core, out)) => {
                self.core = Some(core);
                out
            }
            Err(e) => {
                tracing::error!(path = %self.cfg.path.display(), error = %e,
                    "audit file writer failed; its pending lines are lost");
                self.core = Some(FileCore::fresh(&self.cfg));
                Flushed {
                    delivered: 0,
                    error: Some(format!("file writer task failed: {e}")),
                }
            }
        }
    }
}

impl FileCore {
    fn fresh(cfg: &FileSinkConfig) -> FileCore {
        FileCore {
            cfg: cfg.clone(),
            file: None,
            pending: Pending::default(),
            dirty_since: None,
        }
    }

    fn sync_deadline(&self) -> Option<Instant> {
        match self.cfg.fsync {
            FsyncPolicy::Interval => self
                .dirty_since
                .map(|t| t + Duration::from_millis(self.cfg.fsync_interval_ms)),
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        }
    }

    /// Writes everything pending (rotating as needed), then fsyncs per policy.
    fn flush(&mut self, closing: bool) -> Flushed {
        let mut delivered = 0;
        let path = self.cfg.path.clone();
        let fail = |delivered, what: &str, e: io::Error| Flushed {
            delivered,
            error: Some(format!("{what} {}: {e}", path.display())),
        };
        while let Some((batch, pos)) = self.pending.front() {
            let batch = batch.clone();
            let at_line_start = pos == 0 || batch.ends().binary_search(&pos).is_ok();
            if self.file.is_none() {
                match open_append(&self.cfg.path).and_then(OpenFile::new) {
                    Ok(f) => self.file = Some(f),
                    Err(e) => return fail(delivered, "cannot open", e),
                }
            }
            let next_line_end = batch
                .ends()
                .iter()
                .copied()
                .find(|&e| e > pos)
                .unwrap_or(pos);
            if at_line_start && self.should_rotate((next_line_end - pos) as u64) {
                if let Err(e) = self.rotate() {
                    return fail(delivered, "cannot rotate", e);
                }
                continue;
            }
            let end = self.chunk_end(&batch, pos, at_line_start);
            let Some(open) = self.file.as_mut() else {
                continue;
            };
            match open.file.write(&batch.data()[pos..end]) {
                Ok(0) => {
                    self.file = None;
                    return fail(delivered, "cannot write", io::ErrorKind::WriteZero.into());
                }
                Ok(n) => {
                    open.size += n as u64;
                    self.dirty_since.get_or_insert_with(Instant::now);
                    delivered += self.pending.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.file = None;
                    return fail(delivered, "cannot write", e);
                }
            }
        }
        let sync_now = match self.cfg.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval => {
                closing || self.sync_deadline().is_some_and(|d| Instant::now() >= d)
            }
            FsyncPolicy::Never => false,
        };
        if sync_now && self.dirty_since.is_some() {
            if let Some(open) = &self.file {
                if let Err(e) = open.file.sync_data() {
                    return fail(delivered, "cannot fsync", e);
                }
            }
            self.dirty_since = None;
        }
        if self.cfg.fsync == FsyncPolicy::Never {
            self.dirty_since = None;
        }
        Flushed {
            delivered,
            error: None,
        }
    }

    /// Whether the open file must be rotated before a line of `line_len` bytes.
    fn should_rotate(&self, line_len: u64) -> bool {
        let Some(open) = &self.file else {
            return false;
        };
        if open.size == 0 {
            return false;
        }
        let too_big = self
            .cfg
            .max_bytes
            .is_some_and(|max| open.size.saturating_add(line_len) > max);
        let too_old = self.cfg.max_age_s.is_some_and(|age| {
            SystemTime::now()
                .duration_since(open.created)
                .is_ok_and(|d| d >= Duration::from_secs(age))
        });
        too_big || too_old
    }

    /// End of the next write: whole lines that fit under `max_bytes` (at least one, or
    /// the rest of a line already started).
    fn chunk_end(&self, batch: &Batch, pos: usize, at_line_start: bool) -> usize {
        let data_len = batch.data().len();
        let (Some(max), Some(open)) = (self.cfg.max_bytes, &self.file) else {
            return data_len;
        };
        let room = max.saturating_sub(open.size);
        let first = batch
            .ends()
            .iter()
            .copied()
            .find(|&e| e > pos)
            .unwrap_or(data_len);
        if !at_line_start {
            return first;
        }
        let mut end = first;
        for &e in batch.ends().iter().filter(|&&e| e > first) {
            if (e - pos) as u64 > room {
                break;
            }
            end = e;
        }
        end
    }

    /// Closes the file and shifts `<path>` → `.1` → … → `.<keep>` (the oldest is
    /// overwritten), then starts a new empty file.
    fn rotate(&mut self) -> io::Result<()> {
        let durable = self.cfg.fsync != FsyncPolicy::Never;
        if let Some(open) = self.file.take() {
            if durable && self.dirty_since.is_some() {
                open.file.sync_data()?;
            }
        }
        self.dirty_since = None;
        let path = &self.cfg.path;
        for n in (1..self.cfg.keep).rev() {
            match fs::rename(rotated_path(path, n), rotated_path(path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(path, rotated_path(path, 1))?;
        let file = open_append(path)?;
        if durable {
            sync_parent(path)?;
        }
        self.file = Some(OpenFile::new(file)?);
        tracing::info!(path = %path.display(), "rotated audit file");
        Ok(())
    }
}

impl OpenFile {
    fn new(file: File) -> io::Result<OpenFile> {
        let meta = file.metadata()?;
        let created = meta
            .created()
            .or_else(|_| meta.modified())
            .unwrap_or_else(|_| SystemTime::now());
        Ok(OpenFile {
            file,
            size: meta.len(),
            created,
        })
    }
}

/// Where a restarted chain continues in `path`: `None` for a missing or empty file.
/// A file with content but no valid audit line is refused: appending to it would mix
/// audit lines into something else (a wrong path) or hide a destroyed log.
fn resume_point(path: &Path) -> Result<Option<ChainTip>, AuditError> {
    let tail = last_valid_line(path).map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match tail {
        Tail::Empty => Ok(None),
        Tail::Valid { tip, invalid_after } => {
            if invalid_after > 0 {
                tracing::warn!(
                    path = %path.display(),
                    lines = invalid_after,
                    seq = tip.seq,
                    "audit file ends in lines that are not valid events (tampering?); \
                     continuing the chain after the last valid one"
                );
            }
            Ok(Some(tip))
        }
        Tail::NoValidLine => Err(AuditError::NotAuditLog(path.to_path_buf())),
    }
}

/// `<path>.<n>`: the n-th newest rotated file.
pub(crate) fn rotated_path(path: &Path, n: u32) -> PathBuf {
    rotated_suffix(path, &n.to_string())
}

/// `<path>.<suffix>`.
fn rotated_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Makes a new or renamed directory entry of `path` durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

/// Takes the exclusive lock of the log at `path`, or fails naming the holder.
fn lock_path(path: &Path) -> Result<PathLock, AuditError> {
    let lock = rotated_suffix(path, "lock");
    let io_err = |source| AuditError::Io {
        path: lock.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock)
        .map_err(io_err)?;
    #[cfg(unix)]
    {
        use rustix::fs::{flock, FlockOperation};
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(AuditError::InUse {
                    path: path.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(e) => return Err(io_err(e.into())),
        }
    }
    file.set_len(0).map_err(io_err)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(io_err)?;
    Ok(PathLock { _file: file })
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o640);
    }
    opts.open(path)
}

/// Cuts an incomplete last line (no trailing newline). Returns the bytes removed.
fn trim_torn_tail(path: &Path) -> io::Result<Option<u64>> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(None);
    }
    let mut end = len;
    let keep = loop {
        let start = end.saturating_sub(64 * 1024);
        let mut buf = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        if let Some(p) = buf.iter().rposition(|&b| b == b'\n') {
            break start + p as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(Some(len - keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(path: &Path) -> FileSinkConfig {
        FileSinkConfig {
            name: None,
            path: path.to_path_buf(),
            max_bytes: None,
            max_age_s: None,
            keep: 3,
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 1000,
        }
    }

    fn batch(lines: &[&str]) -> Arc<Batch> {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for l in lines {
            data.extend_from_slice(l.as_bytes());
            data.push(b'\n');
            ends.push(data.len());
        }
        Arc::new(Batch::new(data, ends))
    }

    #[tokio::test]
    async fn rotates_at_line_boundaries_and_keeps_n_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.jsonl");
        let mut c = cfg(&path);
        c.max_bytes = Some(10);
        let (mut sink, tip) = FileSink::open(&c).expect("open");
        assert_eq!(tip, None);
        for i in 0..6 {
            sink.accept(batch(&[&format!("line{i}"), &format!("more{i}")]));
            let out = sink.flush(false).await;
            assert_eq!(out.error, None);
            assert_eq!(out.delivered, 2);
        }
        // 12 lines of 6 bytes, one per file; keep = 3 rotated files.
        assert_eq!(fs::read_to_string(&path).expect("read"), "more5\n");
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 1)).expect("read"),
            "line5\n"
        );
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 3)).expect("read"),
            "line4\n"
        );
        assert!(!rotated_path(&path, 4).exists());
    }

    #[tokio::test]
    async fn rotates_by_age() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.jsonl");
        let mut c = cfg(&path);
        c.max_age_s = Some(1);
        c.fsync = FsyncPolicy::Interval;
        c.fsync_interval_ms = 10;
        let (mut sink, _) = FileSink::open(&c).expect("open");
        sink.accept(batch(&["old"]));
        assert_eq!(sink.flush(false).await.delivered, 1);
        assert!(
            sink.deadline().is_some(),
            "an unsynced file has an fsync deadline"
        );
        sink.accept(batch(&["young"]));
        assert_eq!(sink.flush(false).await.delivered, 1);
        assert!(!rotated_path(&path, 1).exists(), "rotated too early");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(sink.is_due(Instant::now()), "the fsync interval has passed");
        sink.accept(batch(&["new"]));
        assert_eq!(sink.flush(false).await.delivered, 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(sink.is_due(Instant::now()));
        assert_eq!(sink.flush(false).await.error, None);
        assert_eq!(sink.deadline(), None, "synced after the interval");
        assert_eq!(fs::read_to_string(&path).expect("read"), "new\n");
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 1)).expect("read"),
            "old\nyoung\n"
        );
    }

    #[tokio::test]
    async fn torn_tail_is_trimmed_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.jsonl");
        fs::write(&path, "one\ntwo\nthr").expect("write");
        assert!(matches!(
            FileSink::open(&cfg(&path)),
            Err(AuditError::NotAuditLog(_))
        ));
        assert_eq!(fs::read_to_string(&path).expect("read"), "one\ntwo\n");
        fs::write(&path, "no newline at all").expect("write");
        FileSink::open(&cfg(&path)).expect("open");
        assert_eq!(fs::read_to_string(&path).expect("read"), "");
    }

    #[tokio::test]
    async fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.jsonl");
        let first = FileSink::open(&cfg(&path)).expect("open");
        match FileSink::open(&cfg(&path)) {
            Err(AuditError::InUse { holder, .. }) => {
                assert_eq!(holder, std::process::id().to_string());
            }
            other => panic!("expected InUse, got {:?}", other.map(|_| ())),
        }
        drop(first);
        FileSink::open(&cfg(&path)).expect("free again");
    }

    #[tokio::test]
    async fn missing_directory_fails_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("a.jsonl");
        assert!(matches!(
            FileSink::open(&cfg(&path)),
            Err(AuditError::Io { .. })
        ));
    }
}
