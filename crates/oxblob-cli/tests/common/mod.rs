//! Helpers shared by the end-to-end tests: run the real `oxblob` binary and check its output.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::Value;
use std::process::{Command, Output};

/// The `oxblob` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oxblob"))
}

/// Runs `oxblob ARGS` and returns its output.
pub fn oxblob(args: &[&str]) -> Output {
    bin().args(args).output().expect("run oxblob")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and requires success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = oxblob(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

/// Runs and requires a clean failure (exit 1, one `oxblob: ` line, no panic); returns stderr
/// without its trailing newline.
pub fn fails(args: &[&str]) -> String {
    let o = oxblob(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.starts_with("oxblob: "), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err.trim_end().to_string()
}

/// Parses JSON output, naming the text on failure.
pub fn json(s: &str) -> Value {
    serde_json::from_str(s)
        .map_err(|e| format!("bad JSON ({e}): {s}"))
        .unwrap()
}

/// `len` pseudo-random bytes from `seed` (xorshift), for byte-for-byte comparisons.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as u8
        })
        .collect()
}
