//! Gives the shim code a fingerprint of its sources (`SHOAL_SHIM_SOURCE`),
//! so a daemon can tell whether a `shoal-shim` program found beside it was
//! built from the same code as the shim it carries itself (a stale one from
//! an older build must not run its tasks).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    // The shim is `src/process` (it uses nothing else of the crate) plus
    // the exact versions of the crates it links.
    let roots = [
        manifest.join("src/process"),
        manifest.join("../../Cargo.lock"),
    ];
    let mut all = Vec::new();
    for r in &roots {
        println!("cargo:rerun-if-changed={}", r.display());
        if r.is_dir() {
            files(r, &mut all);
        } else {
            all.push(r.clone());
        }
    }
    all.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in &all {
        p.strip_prefix(&manifest).unwrap_or(p).hash(&mut h);
        std::fs::read(p).unwrap_or_default().hash(&mut h);
    }
    println!("cargo:rustc-env=SHOAL_SHIM_SOURCE={:016x}", h.finish());
}
