//! Length-prefixed frames for the Raft replication stream.
//!
//! Replication is the hottest call between managers: every write sends one
//! AppendEntries to each follower and waits for the answers. Through gRPC
//! each call crosses several tasks on both sides (tonic's buffer worker, the
//! HTTP/2 connection task, a task per request); on a busy 2-core host that
//! cost about 400 µs per round trip (BENCHMARKS.md). The stream instead is
//! one mutual-TLS connection per replication session, negotiated with ALPN
//! [`crate::tls::ALPN_RAFT`] on the gRPC port, carrying one request and then
//! its response at a time, read and written by the tasks that use them.
//!
//! A frame is a 4-byte big-endian length, then that many bytes: a tag byte
//! and the body.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted (the gRPC calls' limit for the same messages).
pub const MAX_FRAME: usize = 256 << 20;

/// Request: an openraft AppendEntries request as JSON.
pub const APPEND_ENTRIES: u8 = 1;
/// Request: a batch of writes a follower forwards to the leader, as JSON.
pub const PROPOSE: u8 = 3;
/// Request: has the callee heard from a leader lately? (A follower asks the
/// other voters before it stands for election.) Empty body; the answer is a
/// JSON `LeaderSeen`.
pub const LEADER_SEEN: u8 = 5;
/// Response: the result as JSON.
pub const OK: u8 = 0;
/// Response: the call was refused; the body says why (UTF-8).
pub const REFUSED: u8 = 2;
/// Response: not done, try again (e.g. not the leader); the body says why.
pub const RETRY: u8 = 4;

/// Bytes before a frame's body.
pub const HEADER: usize = 5;

/// A buffer for a frame with tag `tag`: append the body, then [`send`] it.
pub fn start(tag: u8, capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER + capacity);
    buf.extend_from_slice(&[0, 0, 0, 0, tag]);
    buf
}

/// Writes the frame built in `buf` (by [`start`] plus the body) and flushes.
pub async fn send<W: AsyncWrite + Unpin>(w: &mut W, buf: &mut [u8]) -> io::Result<()> {
    let len = buf.len() - 4;
    if buf.len() < HEADER || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {len} bytes"),
        ));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    w.write_all(buf).await?;
    w.flush().await
}

/// Reads one frame into `body` (replacing its contents) and returns its tag.
/// A clean end of stream before a frame is `UnexpectedEof`.
pub async fn recv<R: AsyncRead + Unpin>(r: &mut R, body: &mut Vec<u8>) -> io::Result<u8> {
    recv_at_most(r, body, MAX_FRAME).await
}

/// Like [`recv`], refusing frames longer than `max` bytes before reading
/// (or allocating for) their body.
pub async fn recv_at_most<R: AsyncRead + Unpin>(
    r: &mut R,
    body: &mut Vec<u8>,
    max: usize,
) -> io::Result<u8> {
    let len = r.read_u32().await? as usize;
    if len == 0 || len > max.min(MAX_FRAME) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame length {len}"),
        ));
    }
    let tag = r.read_u8().await?;
    body.clear();
    body.resize(len - 1, 0);
    r.read_exact(body).await?;
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        for body in [&b"{}"[..], b"", &[7u8; 40_000][..]] {
            let mut f = start(APPEND_ENTRIES, body.len());
            f.extend_from_slice(body);
            let (sent, got) = tokio::join!(send(&mut a, &mut f), async {
                let mut out = Vec::new();
                let tag = recv(&mut b, &mut out).await.unwrap();
                (tag, out)
            });
            sent.unwrap();
            assert_eq!(got, (APPEND_ENTRIES, body.to_vec()));
        }
        // A length of zero, or beyond the limit, ends the stream's use.
        for len in [0u32, MAX_FRAME as u32 + 1] {
            let (mut a, mut b) = tokio::io::duplex(64);
            a.write_all(&len.to_be_bytes()).await.unwrap();
            let e = recv(&mut b, &mut Vec::new()).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{len}");
        }
        // A smaller limit is checked before the body is read.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 9, APPEND_ENTRIES]).await.unwrap();
        let e = recv_at_most(&mut b, &mut Vec::new(), 8).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // A stream cut in the middle of a frame is an error, not a short frame.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 9, APPEND_ENTRIES, 1, 2])
            .await
            .unwrap();
        drop(a);
        let e = recv(&mut b, &mut Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
