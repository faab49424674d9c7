//! The task log file: its record format and the rotating writer the shim uses.
//!
//! One record per line: `<RFC 3339 UTC timestamp with nanoseconds> <stdout|stderr> <bytes>`.
//! Output lines longer than [`MAX_LINE`] are split into several records.
//! The live file is `log`; when a record would take it past `max_size` it is
//! renamed to `log.1` (`log.1` to `log.2`, ...) and a new `log` is begun,
//! keeping `max_files` files in all.

use crate::process::spec::LogConfig;
use crate::process::taskdir::rotated_log;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::SystemTime;

/// Longest line stored in one record; longer output lines are split.
pub const MAX_LINE: usize = 16 * 1024;

/// Which of the task's output pipes a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }

    fn parse(text: &[u8]) -> Option<Self> {
        match text {
            b"stdout" => Some(OutputStream::Stdout),
            b"stderr" => Some(OutputStream::Stderr),
            _ => None,
        }
    }
}

/// One line of task output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp: SystemTime,
    pub stream: OutputStream,
    /// The line without its newline; not necessarily UTF-8.
    pub line: Vec<u8>,
}

/// Encodes one record, newline included.
pub(crate) fn format_record(timestamp: SystemTime, stream: OutputStream, line: &[u8]) -> Vec<u8> {
    let ts = humantime::format_rfc3339_nanos(timestamp).to_string();
    let mut record = Vec::with_capacity(ts.len() + 8 + line.len() + 1);
    record.extend_from_slice(ts.as_bytes());
    record.push(b' ');
    record.extend_from_slice(stream.as_str().as_bytes());
    record.push(b' ');
    record.extend_from_slice(line);
    record.push(b'\n');
    record
}

/// Decodes one record (without its newline); `None` for a malformed one.
pub(crate) fn parse_record(record: &[u8]) -> Option<LogLine> {
    let mut parts = record.splitn(3, |&b| b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = OutputStream::parse(parts.next()?)?;
    let line = parts.next()?.to_vec();
    Some(LogLine {
        timestamp: humantime::parse_rfc3339(ts).ok()?,
        stream,
        line,
    })
}

/// Cuts a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds output; calls `emit` with each complete line (newline stripped).
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while !data.is_empty() {
            if self.pending.len() == MAX_LINE {
                // A full chunk waits to see whether its line ends right here,
                // so that a line of exactly MAX_LINE bytes is one record.
                emit(&self.pending);
                self.pending.clear();
                if data[0] == b'\n' {
                    data = &data[1..];
                    continue;
                }
            }
            let room = MAX_LINE - self.pending.len();
            let window = &data[..data.len().min(room)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                self.pending.extend_from_slice(&window[..i]);
                emit(&self.pending);
                self.pending.clear();
                data = &data[i + 1..];
            } else {
                self.pending.extend_from_slice(window);
                data = &data[window.len()..];
            }
        }
    }

    /// The unterminated last line, if any, once the stream has ended.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

/// Appends records to `log`, rotating by size.
#[derive(Debug)]
pub(crate) struct LogWriter {
    base: PathBuf,
    config: LogConfig,
    file: File,
    size: u64,
}

impl LogWriter {
    /// Opens (or continues) the live log file at `base`.
    pub fn open(base: PathBuf, config: LogConfig) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(&base)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            base,
            config,
            file,
            size,
        })
    }

    /// Writes one record stamped now. The timestamp is taken here, under
    /// whatever lock serialises writers, so file order is time order.
    pub fn write_line(&mut self, stream: OutputStream, line: &[u8]) -> io::Result<()> {
        let record = format_record(SystemTime::now(), stream, line);
        if self.size > 0 && self.size + record.len() as u64 > self.config.max_size {
            self.rotate()?;
        }
        // One write per record: a concurrent reader sees whole records or a
        // tail it keeps until the rest arrives.
        self.file.write_all(&record)?;
        self.size += record.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.config.max_files.max(1);
        if keep == 1 {
            fs::remove_file(&self.base)?;
        } else {
            for n in (1..keep - 1).rev() {
                match fs::rename(rotated_log(&self.base, n), rotated_log(&self.base, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.base, rotated_log(&self.base, 1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&self.base)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |l| lines.push(l.to_vec()));
        }
        splitter.finish(|l| lines.push(l.to_vec()));
        lines
    }

    #[test]
    fn lines_are_cut_at_newlines_across_chunks() {
        assert_eq!(
            split(&[b"he", b"llo\nwor", b"ld\n\nlast"]),
            vec![
                b"hello".to_vec(),
                b"world".to_vec(),
                b"".to_vec(),
                b"last".to_vec()
            ]
        );
    }

    #[test]
    fn long_lines_are_split_at_16k() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut input = long.clone();
        input.push(b'\n');
        let lines = split(&[&input]);
        assert_eq!(
            lines.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 10]
        );
    }

    #[test]
    fn a_line_of_exactly_16k_is_one_record() {
        let mut input = vec![b'y'; MAX_LINE];
        input.extend_from_slice(b"\nnext\n");
        let lines = split(&[&input[..100], &input[100..]]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], b"next");
    }

    #[test]
    fn records_round_trip_with_spaces_and_binary() {
        let now = SystemTime::now();
        let record = format_record(now, OutputStream::Stderr, b"a b  \xff c");
        assert!(record.ends_with(b"\n"));
        let parsed = parse_record(&record[..record.len() - 1]).unwrap();
        assert_eq!(
            parsed,
            LogLine {
                timestamp: now,
                stream: OutputStream::Stderr,
                line: b"a b  \xff c".to_vec(),
            }
        );
        assert!(parse_record(b"garbage").is_none());
        assert!(parse_record(b"2024-01-01T00:00:00Z stdin x").is_none());
    }

    #[test]
    fn rotation_keeps_max_files_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("log");
        let config = LogConfig {
            max_size: 500,
            max_files: 3,
        };
        let mut writer = LogWriter::open(base.clone(), config).unwrap();
        for i in 0..100 {
            writer
                .write_line(OutputStream::Stdout, format!("line {i}").as_bytes())
                .unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["log", "log.1", "log.2"]);
        for n in 0..3 {
            let len = fs::metadata(rotated_log(&base, n)).unwrap().len();
            assert!(len <= 500, "log.{n} is {len} bytes");
        }
        let last = fs::read(&base).unwrap();
        assert!(last.ends_with(b" stdout line 99\n"));
    }

    #[test]
    fn a_single_log_file_starts_over_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("log");
        let config = LogConfig {
            max_size: 200,
            max_files: 1,
        };
        let mut writer = LogWriter::open(base.clone(), config).unwrap();
        for i in 0..20 {
            writer
                .write_line(OutputStream::Stderr, format!("line {i}").as_bytes())
                .unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(fs::metadata(&base).unwrap().len() <= 200);
    }
}
