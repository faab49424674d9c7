//! The per-task shim as its own program: `shoal-shim <task-dir>`. The
//! `shoal` binary runs the same code as `shoal task-shim <task-dir>`.

fn main() {
    shoal_agent::process::shim::main()
}
