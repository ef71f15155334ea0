//! Shared test helpers: image paths, URIs, deterministic keys and values, child processes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A scratch directory on the host disk (/var/tmp, so O_DIRECT works on ext4).
pub fn scratch() -> tempfile::TempDir {
    let base = Path::new("/var/tmp");
    let mut b = tempfile::Builder::new();
    b.prefix("oxblob-rocksdb-test-");
    if base.is_dir() {
        b.tempdir_in(base).unwrap()
    } else {
        b.tempdir().unwrap()
    }
}

/// The URI of `img`, formatted at first use (1 GiB, sparse).
pub fn mkfs_uri(img: &Path) -> String {
    format!("oxblob://{}?mkfs=1&size=1GiB", img.display())
}

/// The URI of an existing `img`.
pub fn uri(img: &Path) -> String {
    format!("oxblob://{}", img.display())
}

/// Key `i`: 16 bytes, in order.
pub fn key(i: u64) -> Vec<u8> {
    format!("key{i:013}").into_bytes()
}

/// Value of key `i` in generation `g`: 100..400 bytes derived from both, so a stale or
/// misplaced value cannot pass for the right one.
pub fn value(i: u64, g: u64) -> Vec<u8> {
    let mut x = i
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(g.wrapping_mul(0xD1B5_4A32_D192_ED03))
        | 1;
    let len = 100 + (x % 300) as usize;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Re-runs this test binary's ignored test `name` with `env` set (a child process).
pub fn child(name: &str, env: &[(&str, String)]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new(exe);
    c.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null());
    c
}

/// The plugin library (`liboxblob_rocksdb.so`) next to this test binary's directory, if
/// cargo built it.
pub fn plugin_so() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    // deps/ holds the copy built with this test binary; the one above may be older.
    [
        deps.join("liboxblob_rocksdb.so"),
        deps.join("../liboxblob_rocksdb.so"),
    ]
    .into_iter()
    .find(|p| p.exists())
}

/// `db_bench` on PATH, if installed (Debian rocksdb-tools).
pub fn db_bench() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("db_bench"))
        .find(|p| p.exists())
}
