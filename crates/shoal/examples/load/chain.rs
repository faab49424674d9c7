//! `api_load chain`: the ceiling for sequential Raft-shaped writes on this
//! machine (see api_load's module docs).

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ACK: usize = 64;
const WAL_BYTES: u64 = 64 << 20;

/// A log file filled with zeros and synced, so appends change no metadata.
struct Wal {
    file: std::fs::File,
    off: u64,
}

impl Wal {
    fn create(path: &Path) -> anyhow::Result<Wal> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        let zeros = vec![0u8; 1 << 20];
        for i in 0..WAL_BYTES >> 20 {
            file.write_all_at(&zeros, i << 20)?;
        }
        file.sync_all()?;
        Ok(Wal { file, off: 0 })
    }

    fn append(&mut self, rec: &[u8]) -> std::io::Result<()> {
        if self.off + rec.len() as u64 > WAL_BYTES {
            self.off = 0;
        }
        self.file.write_all_at(rec, self.off)?;
        self.file.sync_data()?;
        self.off += rec.len() as u64;
        Ok(())
    }
}

/// Kills and reaps the chain's processes however `run` ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(args: &[&str]) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()?)
}

/// The first line a child prints (followers print their port, the leader
/// "ready").
fn first_line(c: &mut Child) -> anyhow::Result<String> {
    let out = c.stdout.take().context("child stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    if line.is_empty() {
        bail!("a chain node ended before it was ready");
    }
    Ok(line.trim().to_string())
}

pub fn run(dir: &Path, duration: f64, bytes: usize, leader_thread: bool) -> anyhow::Result<()> {
    let dir = dir.join(format!("shoal-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let res = run_in(&dir, duration, bytes, leader_thread);
    let _ = std::fs::remove_dir_all(&dir);
    res
}

fn run_in(dir: &Path, duration: f64, bytes: usize, leader_thread: bool) -> anyhow::Result<()> {
    let b = bytes.to_string();
    let mut kids = Children(Vec::new());
    let mut followers = Vec::new();
    for i in 1..=2 {
        let wal = dir.join(format!("f{i}.wal"));
        let wal = wal.to_str().context("path")?;
        kids.0.push(spawn(&[
            "chain-node",
            "--role",
            "follower",
            "--wal",
            wal,
            "--bytes",
            &b,
        ])?);
        let port = first_line(kids.0.last_mut().expect("pushed"))?;
        followers.push(format!("127.0.0.1:{port}"));
    }
    let sock = dir.join("leader.sock");
    let listener = UnixListener::bind(&sock)?;
    let wal = dir.join("l.wal");
    let mut args = vec![
        "chain-node",
        "--role",
        "leader",
        "--wal",
        wal.to_str().context("path")?,
        "--bytes",
        &b,
        "--unix",
        sock.to_str().context("path")?,
        "--followers",
        &followers[0],
        "--followers",
        &followers[1],
    ];
    if leader_thread {
        args.push("--leader-thread");
    }
    kids.0.push(spawn(&args)?);
    let (mut conn, _) = listener.accept()?;
    first_line(kids.0.last_mut().expect("pushed"))?;
    let req = vec![7u8; bytes];
    let mut ack = [0u8; ACK];
    let warm_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < warm_until {
        conn.write_all(&req)?;
        conn.read_exact(&mut ack)?;
    }
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(duration);
    while Instant::now() < end {
        let s = Instant::now();
        conn.write_all(&req)?;
        conn.read_exact(&mut ack)?;
        lat.push(s.elapsed().as_nanos() as u64);
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_unstable();
    let at = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)] as f64 / 1e6;
    let wps = lat.len() as f64 / secs;
    println!(
        "chain ({bytes} B requests, leader sync {}): {} writes in {secs:.1}s, {wps:.0} writes/s, \
         p50 {:.3} ms, p99 {:.3} ms",
        if leader_thread {
            "on a thread"
        } else {
            "inline"
        },
        lat.len(),
        at(50),
        at(99)
    );
    println!(
        "RESULT chain_wps={wps:.0} chain_p50_ms={:.3} chain_p99_ms={:.3}",
        at(50),
        at(99)
    );
    Ok(())
}

pub fn node(
    role: &str,
    wal: &Path,
    bytes: usize,
    unix: Option<PathBuf>,
    followers: &[String],
    leader_thread: bool,
) -> anyhow::Result<()> {
    let log = Wal::create(wal)?;
    let mut buf = vec![0u8; bytes];
    match role {
        "follower" => {
            let l = TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
            std::io::stdout().flush()?;
            let (mut s, _) = l.accept()?;
            s.set_nodelay(true)?;
            let ack = [1u8; ACK];
            let mut log = log;
            while s.read_exact(&mut buf).is_ok() {
                log.append(&buf)?;
                s.write_all(&ack)?;
            }
            Ok(())
        }
        "leader" => {
            let mut fs: Vec<TcpStream> = Vec::new();
            for a in followers {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                fs.push(s);
            }
            let mut client = UnixStream::connect(unix.context("--unix")?)?;
            println!("ready");
            std::io::stdout().flush()?;
            // Answers still owed by each follower (the slower one's answer
            // to a write is read during the next).
            let mut owed = vec![0u64; fs.len()];
            let mut ack = [0u8; ACK];
            let mut inline = Some(log);
            let syncer = if leader_thread {
                let mut log = inline.take().expect("the log");
                let (tx, rx) = mpsc::channel::<Vec<u8>>();
                let (done_tx, done_rx) = mpsc::channel::<()>();
                std::thread::spawn(move || {
                    while let Ok(rec) = rx.recv() {
                        log.append(&rec).expect("leader append");
                        if done_tx.send(()).is_err() {
                            break;
                        }
                    }
                });
                Some((tx, done_rx))
            } else {
                None
            };
            while client.read_exact(&mut buf).is_ok() {
                for (i, f) in fs.iter_mut().enumerate() {
                    f.write_all(&buf)?;
                    owed[i] += 1;
                }
                match (&syncer, &mut inline) {
                    (Some((tx, _)), _) => tx.send(buf.clone())?,
                    (None, Some(w)) => w.append(&buf)?,
                    _ => unreachable!(),
                }
                // Wait for the first follower to owe nothing.
                while owed.iter().all(|o| *o > 0) {
                    let mut pfds: Vec<nix::poll::PollFd> = fs
                        .iter()
                        .map(|f| nix::poll::PollFd::new(f.as_fd(), nix::poll::PollFlags::POLLIN))
                        .collect();
                    nix::poll::poll(&mut pfds, nix::poll::PollTimeout::NONE)?;
                    let ready: Vec<bool> = pfds
                        .iter()
                        .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                        .collect();
                    for (i, r) in ready.into_iter().enumerate() {
                        if r {
                            fs[i].read_exact(&mut ack)?;
                            owed[i] -= 1;
                        }
                    }
                }
                if let Some((_, done)) = &syncer {
                    done.recv()?;
                }
                client.write_all(&ack)?;
            }
            Ok(())
        }
        _ => bail!("unknown role {role}"),
    }
}
