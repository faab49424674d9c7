//! Reading a task's log: the last N lines across rotated files, lines since
//! a time, and following new output through rotations until the task has
//! exited and everything is read.
//!
//! Following works on the open file, not the name: when `log` is renamed
//! away the reader drains the file it holds, then finds the file that came
//! after it by inode. A reader that falls more than `max_files` rotations
//! behind loses the lines in between, as with Docker's json-file driver.

use crate::process::logfile::{parse_record, LogLine};
use crate::process::taskdir::{rotated_log, TaskDir};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// How much of a log to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N lines (stdout and stderr counted together).
    pub tail: Option<usize>,
    /// Keep reading new lines until the task has exited.
    pub follow: bool,
    /// Only lines stamped at or after this time.
    pub since: Option<SystemTime>,
}

/// Lines buffered between the reader and a slow consumer.
const CHANNEL_DEPTH: usize = 256;
const READ_CHUNK: usize = 64 * 1024;

/// Starts reading in a background task. The receiver yields lines in file
/// order and closes at the end of the log (with `follow`: once the task has
/// exited and all is read); dropping it stops the reader.
pub(crate) fn spawn_reader(
    dir: TaskDir,
    options: LogOptions,
    poll: Duration,
) -> mpsc::Receiver<LogLine> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let path = dir.path().to_path_buf();
        let reader = Reader {
            base: dir.log(),
            exit_file: dir.exit(),
            options,
            poll,
            tx,
        };
        if let Err(e) = reader.run().await {
            tracing::warn!(dir = %path.display(), error = %e, "reading task log failed");
        }
    });
    rx
}

/// The consumer went away: stop quietly.
struct Closed;

struct Reader {
    base: PathBuf,
    exit_file: PathBuf,
    options: LogOptions,
    poll: Duration,
    tx: mpsc::Sender<LogLine>,
}

impl Reader {
    async fn run(self) -> io::Result<()> {
        // Open the live file before looking at rotated ones: if a rotation
        // races us, the file we hold shows up among them and is skipped.
        let mut live = Cursor::open(&self.base).await?;
        let live_lines = match live.as_mut() {
            Some(cursor) => cursor.read_to_end().await?,
            None => Vec::new(),
        };
        let held = live.as_ref().map(|c| c.ino);
        let history = match self.options.tail {
            Some(n) => self.tail(n, live_lines, held).await?,
            None => {
                if self.send_rotated(held).await.is_err() {
                    return Ok(());
                }
                live_lines
            }
        };
        if self.send_all(history).await.is_err() || !self.options.follow {
            return Ok(());
        }
        let _ = self.follow(live).await?;
        Ok(())
    }

    fn wanted(&self, line: &LogLine) -> bool {
        self.options
            .since
            .is_none_or(|since| line.timestamp >= since)
    }

    async fn send_all(&self, lines: Vec<LogLine>) -> Result<(), Closed> {
        for line in lines {
            if self.wanted(&line) {
                self.tx.send(line).await.map_err(|_| Closed)?;
            }
        }
        Ok(())
    }

    /// The last `n` wanted lines: the live file's, then older files' as needed.
    async fn tail(
        &self,
        n: usize,
        live_lines: Vec<LogLine>,
        held: Option<u64>,
    ) -> io::Result<Vec<LogLine>> {
        let mut newest_first: Vec<Vec<LogLine>> = Vec::new();
        let mut count = 0;
        let mut add = |lines: Vec<LogLine>, newest_first: &mut Vec<Vec<LogLine>>| {
            let kept: Vec<LogLine> = lines.into_iter().filter(|l| self.wanted(l)).collect();
            count += kept.len();
            newest_first.push(kept);
            count >= n
        };
        if !add(live_lines, &mut newest_first) {
            for path in rotated_files(&self.base, held).await? {
                if add(read_records(&path).await?, &mut newest_first) {
                    break;
                }
            }
        }
        let all: Vec<LogLine> = newest_first.into_iter().rev().flatten().collect();
        let skip = all.len().saturating_sub(n);
        Ok(all.into_iter().skip(skip).collect())
    }

    /// Sends every rotated file, oldest first.
    async fn send_rotated(&self, held: Option<u64>) -> Result<(), Closed> {
        let files = rotated_files(&self.base, held).await.unwrap_or_default();
        for path in files.iter().rev() {
            let lines = read_records(path).await.unwrap_or_default();
            self.send_all(lines).await?;
        }
        Ok(())
    }

    async fn follow(&self, mut cursor: Option<Cursor>) -> io::Result<Result<(), Closed>> {
        let mut task_exited = false;
        loop {
            match cursor.as_mut() {
                Some(c) => {
                    let (lines, read) = c.read_chunk().await?;
                    if let Err(closed) = self.send_all(lines).await {
                        return Ok(Err(closed));
                    }
                    if read > 0 {
                        continue;
                    }
                    if let Some(next) = successor(&self.base, c.ino).await? {
                        // The writer has moved on: what it wrote here before
                        // rotating comes first.
                        let rest = c.read_to_end().await?;
                        if let Err(closed) = self.send_all(rest).await {
                            return Ok(Err(closed));
                        }
                        *c = next;
                        continue;
                    }
                }
                None => {
                    cursor = Cursor::open(&self.base).await?;
                    if cursor.is_some() {
                        continue;
                    }
                }
            }
            if task_exited {
                return Ok(Ok(()));
            }
            if tokio::fs::try_exists(&self.exit_file).await? {
                // The shim writes exit.json after the last record: one more
                // pass reads everything.
                task_exited = true;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = self.tx.closed() => return Ok(Err(Closed)),
            }
        }
    }
}

/// An open log file and the unterminated record read so far.
struct Cursor {
    file: tokio::fs::File,
    ino: u64,
    pending: Vec<u8>,
}

impl Cursor {
    async fn open(path: &Path) -> io::Result<Option<Cursor>> {
        match tokio::fs::File::open(path).await {
            Ok(file) => {
                let ino = file.metadata().await?.ino();
                Ok(Some(Cursor {
                    file,
                    ino,
                    pending: Vec::new(),
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads one chunk; returns the complete records in it and the bytes read.
    async fn read_chunk(&mut self) -> io::Result<(Vec<LogLine>, usize)> {
        let mut buf = vec![0u8; READ_CHUNK];
        let n = self.file.read(&mut buf).await?;
        self.pending.extend_from_slice(&buf[..n]);
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Ok((Vec::new(), n));
        };
        let rest = self.pending.split_off(end + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        Ok((parse_records(&complete), n))
    }

    async fn read_to_end(&mut self) -> io::Result<Vec<LogLine>> {
        let mut all = Vec::new();
        loop {
            let (lines, n) = self.read_chunk().await?;
            all.extend(lines);
            if n == 0 {
                return Ok(all);
            }
        }
    }
}

fn parse_records(bytes: &[u8]) -> Vec<LogLine> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|r| !r.is_empty())
        .filter_map(parse_record)
        .collect()
}

async fn read_records(path: &Path) -> io::Result<Vec<LogLine>> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Ok(parse_records(&bytes)),
        // Rotated out of existence since we listed it.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// `log.1`, `log.2`, ... newest first, without the file we already hold.
async fn rotated_files(base: &Path, held: Option<u64>) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for n in 1.. {
        let path = rotated_log(base, n);
        match tokio::fs::metadata(&path).await {
            Ok(meta) if Some(meta.ino()) == held => {}
            Ok(_) => files.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    Ok(files)
}

async fn ino_of(path: &Path) -> io::Result<Option<u64>> {
    match tokio::fs::metadata(path).await {
        Ok(meta) => Ok(Some(meta.ino())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// When the file with inode `ino` is no longer the live log, the file
/// written after it: `log.<k-1>` if it is now `log.<k>`, or the oldest file
/// left if it has been rotated out. `None` while it is still the live file
/// (or its successor does not exist yet).
async fn successor(base: &Path, ino: u64) -> io::Result<Option<Cursor>> {
    if ino_of(base).await? == Some(ino) {
        return Ok(None);
    }
    let mut oldest = None;
    for k in 1.. {
        let path = rotated_log(base, k);
        match ino_of(&path).await? {
            Some(found) if found == ino => return Cursor::open(&rotated_log(base, k - 1)).await,
            Some(_) => oldest = Some(path),
            None => break,
        }
    }
    Cursor::open(oldest.as_deref().unwrap_or(base)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::logfile::{LogWriter, OutputStream};
    use crate::process::spec::LogConfig;

    const POLL: Duration = Duration::from_millis(10);

    async fn collect(mut rx: mpsc::Receiver<LogLine>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = rx.recv().await {
            out.push(String::from_utf8(l.line).unwrap());
        }
        out
    }

    fn write_lines(dir: &TaskDir, config: LogConfig, lines: std::ops::Range<usize>) {
        let mut w = LogWriter::open(dir.log(), config).unwrap();
        for i in lines {
            let stream = if i % 2 == 0 {
                OutputStream::Stdout
            } else {
                OutputStream::Stderr
            };
            w.write_line(stream, format!("line {i:04}").as_bytes())
                .unwrap();
        }
    }

    fn numbered(lines: std::ops::Range<usize>) -> Vec<String> {
        lines.map(|i| format!("line {i:04}")).collect()
    }

    const SMALL: LogConfig = LogConfig {
        max_size: 1000,
        max_files: 3,
    };

    #[tokio::test]
    async fn tail_counts_both_streams_across_rotated_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TaskDir::new(tmp.path().to_path_buf());
        write_lines(&dir, SMALL, 0..100);
        assert!(rotated_log(&dir.log(), 2).exists());
        let live_count = parse_records(&std::fs::read(dir.log()).unwrap()).len();
        let n = live_count + 5; // needs log.1 too
        let opts = LogOptions {
            tail: Some(n),
            ..Default::default()
        };
        let got = collect(spawn_reader(dir.clone(), opts, POLL)).await;
        assert_eq!(got, numbered(100 - n..100));
    }

    #[tokio::test]
    async fn without_tail_everything_kept_is_read_oldest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TaskDir::new(tmp.path().to_path_buf());
        write_lines(&dir, SMALL, 0..100);
        let got = collect(spawn_reader(dir.clone(), LogOptions::default(), POLL)).await;
        let first: usize = got[0][5..].parse().unwrap();
        assert!(first > 0, "the oldest lines were rotated out");
        assert_eq!(got, numbered(first..100));
    }

    #[tokio::test]
    async fn since_drops_older_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TaskDir::new(tmp.path().to_path_buf());
        write_lines(&dir, LogConfig::default(), 0..3);
        std::thread::sleep(Duration::from_millis(5));
        let cut = SystemTime::now();
        std::thread::sleep(Duration::from_millis(5));
        write_lines(&dir, LogConfig::default(), 3..5);
        let opts = LogOptions {
            since: Some(cut),
            ..Default::default()
        };
        let got = collect(spawn_reader(dir, opts, POLL)).await;
        assert_eq!(got, numbered(3..5));
    }

    #[tokio::test]
    async fn follow_reads_through_rotations_until_exit() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TaskDir::new(tmp.path().to_path_buf());
        write_lines(&dir, SMALL, 0..2);
        let opts = LogOptions {
            tail: Some(1),
            follow: true,
            ..Default::default()
        };
        let mut rx = spawn_reader(dir.clone(), opts, POLL);
        let first = rx.recv().await.unwrap();
        assert_eq!(first.line, b"line 0001", "tail 1 is the last line so far");
        let writer_dir = dir.clone();
        let writer = std::thread::spawn(move || {
            let mut w = LogWriter::open(writer_dir.log(), SMALL).unwrap();
            for i in 2..300 {
                w.write_line(OutputStream::Stdout, format!("line {i:04}").as_bytes())
                    .unwrap();
                if i % 10 == 0 {
                    // ~1 rotation per 50 ms: the reader keeps up.
                    std::thread::sleep(Duration::from_millis(15));
                }
            }
            std::fs::write(writer_dir.exit(), b"{}").unwrap();
        });
        let got = tokio::time::timeout(Duration::from_secs(10), collect(rx))
            .await
            .expect("follow ends once the task has exited");
        writer.join().unwrap();
        assert_eq!(got, numbered(2..300));
    }
}
