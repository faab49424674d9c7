//! Times `Tables::apply` the way the write benchmark drives it: configs with
//! unique names and fresh IDs created one command at a time, into a table
//! that grows to N objects (`cargo run --release -p shoal-store --example
//! apply_bench -- [N]`, default 200,000). Prints ns per create for each
//! tenth of the run (wall time), and the process's CPU time per create over
//! the whole run (steadier on a shared machine).

use shoal_api::{BlobSpec, Secret, Timestamp};
use shoal_store::{Command, Expect, Object, Op, Tables};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let now = Timestamp::now();
    let cmds: Vec<Command> = (0..n)
        .map(|i| {
            let config = Secret {
                id: shoal_api::new_id(),
                created_at: now,
                updated_at: now,
                spec: BlobSpec {
                    name: format!("bench-{i}"),
                    data: "aGk=".into(),
                    ..Default::default()
                },
                ..Default::default()
            };
            Command {
                ops: vec![Op::Put {
                    object: Object::Config(config.into()),
                    expect: Expect::Absent,
                }],
                atomic: true,
                request: (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            }
        })
        .collect();
    let cpu0 = cpu_ticks();
    let mut tables = Tables::default();
    let step = (n / 10).max(1);
    let mut cmds = cmds.into_iter();
    let mut index = 1u64;
    let mut total = 0u128;
    loop {
        let chunk: Vec<Command> = cmds.by_ref().take(step).collect();
        if chunk.is_empty() {
            break;
        }
        let len = chunk.len();
        let started = Instant::now();
        for cmd in chunk {
            let (r, events) = tables.apply(index, cmd);
            assert!(r.results[0].is_ok());
            drop(events);
            index += 1;
        }
        let ns = started.elapsed().as_nanos();
        total += ns;
        println!(
            "{:>8} objects: {:>6.0} ns/create",
            tables.configs.len(),
            ns as f64 / len as f64
        );
    }
    let cpu_ns = (cpu_ticks() - cpu0) as f64 * 1e7; // 100 ticks a second
    println!(
        "RESULT n={n} ns_per_create={:.0} cpu_ns_per_create={:.0}",
        total as f64 / n as f64,
        cpu_ns / n as f64
    );
}

/// utime + stime of this process, in clock ticks (Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}
