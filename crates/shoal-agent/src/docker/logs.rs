//! A container's output through the Engine API's logs endpoint, asked for
//! with `timestamps=true`: every frame is `<RFC 3339 nano timestamp> <line>`,
//! the line ending in `\n` unless the log driver split a long line (16 KiB
//! parts, each with its own timestamp). Frames become [`LogLine`]s, the same
//! type the process executor yields.

use crate::process::{LogLine, LogOptions, OutputStream};
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use bollard::Docker;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// Lines buffered between the reader and a slow consumer.
const CHANNEL_DEPTH: usize = 256;

/// The Engine API query for `options`. `since` has whole-second resolution
/// there (rounded down); [`spawn_reader`] drops the earlier lines itself.
fn query(options: &LogOptions) -> LogsOptions {
    let since = options
        .since
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX))
        .unwrap_or(0);
    LogsOptions {
        follow: options.follow,
        stdout: true,
        stderr: true,
        since,
        until: 0,
        timestamps: true,
        tail: options
            .tail
            .map(|n| n.to_string())
            .unwrap_or_else(|| "all".into()),
    }
}

/// Starts reading in a background task. The receiver yields lines in order
/// and closes at the end of the log (with `follow`: once the container has
/// stopped); dropping it stops the reader.
pub(crate) fn spawn_reader(
    docker: Docker,
    container_id: String,
    options: LogOptions,
) -> mpsc::Receiver<LogLine> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let mut stream = Box::pin(docker.logs(&container_id, Some(query(&options))));
        let mut last = SystemTime::now();
        loop {
            let frame = tokio::select! {
                frame = stream.next() => frame,
                () = tx.closed() => return,
            };
            let (stream_kind, message) = match frame {
                None => return,
                Some(Ok(LogOutput::StdOut { message })) => (OutputStream::Stdout, message),
                Some(Ok(LogOutput::StdErr { message })) => (OutputStream::Stderr, message),
                Some(Ok(LogOutput::Console { message })) => (OutputStream::Stdout, message),
                Some(Ok(LogOutput::StdIn { .. })) => continue,
                Some(Err(e)) => {
                    tracing::warn!(container = %container_id, error = %e, "reading container log failed");
                    return;
                }
            };
            for line in parse_frame(stream_kind, &message, &mut last) {
                if options.since.is_some_and(|since| line.timestamp < since) {
                    continue;
                }
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Splits one frame into lines. A frame normally holds one timestamped
/// line; a piece without a timestamp gets the last one seen (`last`).
pub(crate) fn parse_frame(
    stream: OutputStream,
    frame: &[u8],
    last: &mut SystemTime,
) -> Vec<LogLine> {
    let body = frame.strip_suffix(b"\n").unwrap_or(frame);
    if body.is_empty() && frame.is_empty() {
        return Vec::new();
    }
    body.split(|&b| b == b'\n')
        .map(|piece| {
            let (timestamp, line) = split_timestamp(piece).unwrap_or((*last, piece));
            *last = timestamp;
            LogLine {
                timestamp,
                stream,
                line: line.to_vec(),
            }
        })
        .collect()
}

/// `2024-01-02T03:04:05.123456789Z rest` → (time, `rest`).
fn split_timestamp(piece: &[u8]) -> Option<(SystemTime, &[u8])> {
    let space = piece.iter().position(|&b| b == b' ');
    let (ts, rest) = match space {
        Some(i) => (&piece[..i], &piece[i + 1..]),
        None => (piece, &piece[piece.len()..]),
    };
    // A timestamp is short and starts with a digit; anything else is text.
    if ts.len() < 20 || ts.len() > 40 || !ts[0].is_ascii_digit() {
        return None;
    }
    let text = std::str::from_utf8(ts).ok()?;
    Some((humantime::parse_rfc3339(text).ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn frames_give_timestamp_stream_and_line() {
        let mut last = UNIX_EPOCH;
        let lines = parse_frame(
            OutputStream::Stderr,
            b"2024-01-02T03:04:05.123456789Z err text\n",
            &mut last,
        );
        assert_eq!(
            lines,
            vec![LogLine {
                timestamp: at(1_704_164_645, 123_456_789),
                stream: OutputStream::Stderr,
                line: b"err text".to_vec(),
            }]
        );
        assert_eq!(last, at(1_704_164_645, 123_456_789));
    }

    #[test]
    fn docker_trims_trailing_zeros_of_the_fraction() {
        let mut last = UNIX_EPOCH;
        let lines = parse_frame(
            OutputStream::Stdout,
            b"2024-01-02T03:04:05.1Z hi\n",
            &mut last,
        );
        assert_eq!(lines[0].timestamp, at(1_704_164_645, 100_000_000));
        let lines = parse_frame(OutputStream::Stdout, b"2024-01-02T03:04:05Z \n", &mut last);
        assert_eq!(lines[0].timestamp, at(1_704_164_645, 0));
        assert_eq!(lines[0].line, b"");
    }

    #[test]
    fn partial_lines_and_untimestamped_pieces_are_kept() {
        let mut last = at(7, 0);
        // A split long line: no trailing newline.
        let lines = parse_frame(
            OutputStream::Stdout,
            b"2024-01-02T03:04:05.5Z part one",
            &mut last,
        );
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line, b"part one");
        // Text without a timestamp takes the last one seen.
        let lines = parse_frame(OutputStream::Stdout, b"plain\nnext\n", &mut last);
        assert_eq!(lines.len(), 2);
        assert!(lines
            .iter()
            .all(|l| l.timestamp == at(1_704_164_645, 500_000_000)));
        assert_eq!(lines[1].line, b"next");
        assert!(parse_frame(OutputStream::Stdout, b"", &mut last).is_empty());
    }

    #[test]
    fn query_asks_for_timestamps_and_both_streams() {
        let q = query(&LogOptions {
            tail: Some(5),
            follow: true,
            since: Some(at(100, 900_000_000)),
        });
        assert!(q.timestamps && q.stdout && q.stderr && q.follow);
        assert_eq!(q.tail, "5");
        assert_eq!(q.since, 100);
        assert_eq!(query(&LogOptions::default()).tail, "all");
    }
}
