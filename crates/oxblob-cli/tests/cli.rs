//! End-to-end tests of the `oxblob` binary: help, error format, and a real malloc benchmark.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};

fn oxblob(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxblob"))
        .args(args)
        .output()
        .expect("run oxblob")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed run: non-zero exit, one `oxblob: ` message on stderr, nothing on stdout, no panic.
fn assert_clean_failure(o: &Output) -> String {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(
        err.starts_with("oxblob: "),
        "stderr does not start with 'oxblob: ': {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "panic: {err}");
    assert!(stdout(o).is_empty(), "stdout not empty: {}", stdout(o));
    err
}

#[test]
fn help_and_version() {
    let o = oxblob(&["--help"]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.contains("Usage: oxblob"), "{out}");
    assert!(out.contains("bench"), "{out}");

    let o = oxblob(&["bench", "bdev", "--help"]);
    assert!(o.status.success());
    let out = stdout(&o);
    for flag in [
        "--dev",
        "--config",
        "--bdev",
        "--rw",
        "--bs",
        "--qd",
        "--seconds",
        "--threads",
    ] {
        assert!(out.contains(flag), "help lacks {flag}: {out}");
    }
    for flag in ["--span", "--json", "randread", "randwrite"] {
        assert!(out.contains(flag), "help lacks {flag}: {out}");
    }

    let o = oxblob(&["--version"]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o).trim(),
        format!("oxblob {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_spec_is_a_clear_error() {
    let o = oxblob(&["bench", "bdev", "--dev", "bogus:thing", "--seconds", "0.1"]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("opening device 'bogus:thing'"), "{err}");
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn bad_malloc_size_is_a_clear_error() {
    let o = oxblob(&["bench", "bdev", "--dev", "malloc:12xyz", "--seconds", "0.1"]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("malloc:12xyz"), "{err}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("does-not-exist.img");
    let spec = format!("file:{}", path.display());
    let o = oxblob(&["bench", "bdev", "--dev", &spec, "--seconds", "0.1"]);
    let err = assert_clean_failure(&o);
    assert!(err.contains(&spec), "{err}");
}

#[test]
fn usage_errors_use_the_same_prefix() {
    for args in [
        &["bench", "bdev", "--dev", "malloc:1M", "--bs", "4q"][..],
        &["bench", "bdev", "--dev", "malloc:1M", "--rw", "sideways"][..],
        &["bench", "bdev", "--dev", "malloc:1M", "--qd", "0"][..],
        &["bench", "bdev"][..],
        &["no-such-command"][..],
        &["bench"][..],
        &[][..],
    ] {
        let o = oxblob(args);
        let err = assert_clean_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    }
}

#[test]
fn bs_larger_than_device_is_a_clear_error() {
    let o = oxblob(&[
        "bench",
        "bdev",
        "--dev",
        "malloc:1MiB",
        "--bs",
        "2M",
        "--seconds",
        "0.1",
    ]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("benchmarking device 'malloc:1MiB'"), "{err}");
    assert!(err.contains("larger than the span"), "{err}");
}

#[test]
fn malloc_bench_prints_json() {
    let o = oxblob(&[
        "bench",
        "bdev",
        "--dev",
        "malloc:64MiB",
        "--seconds",
        "1",
        "--warmup",
        "0.2",
        "--json",
    ]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "one JSON line expected: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    for key in [
        "backend",
        "direct_io",
        "rw",
        "bs",
        "qd",
        "threads",
        "seconds",
        "ios",
        "iops",
        "mib_s",
        "lat_mean_us",
        "lat_p99_us",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {out}");
    }
    assert_eq!(v["backend"], "malloc");
    assert_eq!(v["direct_io"], false);
    assert_eq!(v["rw"], "randread");
    assert_eq!(v["bs"], 4096);
    assert_eq!(v["qd"], 32);
    assert_eq!(v["threads"], 1);
    assert_eq!(v["span"], 64u64 << 20);
    let iops = v["iops"].as_f64().unwrap();
    let ios = v["ios"].as_u64().unwrap();
    let secs = v["seconds"].as_f64().unwrap();
    assert!(iops > 0.0 && ios > 0, "{out}");
    assert!(
        (0.9..3.0).contains(&secs),
        "measured {secs} s for --seconds 1: {out}"
    );
    // iops is ios over the measured window; MiB/s follows from iops and bs.
    assert!((iops - ios as f64 / secs).abs() / iops < 1e-6, "{out}");
    let mib = v["mib_s"].as_f64().unwrap();
    assert!(
        (mib - iops * 4096.0 / 1048576.0).abs() / mib < 1e-6,
        "{out}"
    );
    let mean = v["lat_mean_us"].as_f64().unwrap();
    let p99 = v["lat_p99_us"].as_f64().unwrap();
    assert!(mean > 0.0 && p99 > 0.0, "{out}");
}

#[test]
fn human_report_has_the_figures() {
    let o = oxblob(&[
        "bench",
        "bdev",
        "--dev",
        "malloc:16MiB",
        "--rw",
        "write",
        "--bs",
        "64k",
        "--qd",
        "4",
        "--seconds",
        "0.3",
        "--warmup",
        "0",
    ]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("malloc"), "{out}");
    assert!(out.contains("write bs=64KiB qd=4 threads=1"), "{out}");
    assert!(
        out.contains("IOPS") && out.contains("MiB/s") && out.contains("p99"),
        "{out}"
    );
    // Not a terminal: no progress bar on stderr.
    assert!(stderr(&o).is_empty(), "stderr: {}", stderr(&o));
}

fn json_of(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "stderr: {}", stderr(o));
    serde_json::from_str(&stdout(o)).expect("valid JSON")
}

#[test]
fn file_spec_bench_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let spec = format!("file:{}", path.display());
    let v = json_of(&oxblob(&[
        "bench",
        "bdev",
        "--dev",
        &spec,
        "--rw",
        "write",
        "--bs",
        "64k",
        "--qd",
        "4",
        "--seconds",
        "0.3",
        "--warmup",
        "0",
        "--json",
    ]));
    // 16 writes cover the file; 0.3 s at QD 4 is hundreds on any disk.
    assert!(v["ios"].as_u64().unwrap() >= 16, "{v}");
    assert_eq!(v["rw"], "write");
    assert_eq!(v["span"], 1u64 << 20);
    // Sequential writes of random data wrapped over the whole file: no zero block is left (an
    // all-zero 64 KiB random block has probability 2^-524288).
    let data = std::fs::read(&path).unwrap();
    assert_eq!(
        data.len(),
        1 << 20,
        "the benchmark must not change the file size"
    );
    for (i, block) in data.chunks(64 << 10).enumerate() {
        assert!(block.iter().any(|&b| b != 0), "block {i} was never written");
    }
}

#[test]
fn json_config_selects_the_bdev() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bdevs.json");
    std::fs::write(
        &cfg,
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_malloc_create","params":{"name":"Fast0","num_blocks":8192,"block_size":4096}},
            {"method":"bdev_malloc_create","params":{"name":"Small1","num_blocks":16,"block_size":512}}
        ]}]}"#,
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let v = json_of(&oxblob(&[
        "bench",
        "bdev",
        "--config",
        cfg_s,
        "--bdev",
        "Small1",
        "--bs",
        "512",
        "--qd",
        "2",
        "--seconds",
        "0.2",
        "--warmup",
        "0",
        "--json",
    ]));
    assert_eq!(v["device"], "Small1");
    assert_eq!(v["span"], 16 * 512);
    assert_eq!(v["bs"], 512);

    let o = oxblob(&[
        "bench",
        "bdev",
        "--config",
        cfg_s,
        "--bdev",
        "Nope",
        "--seconds",
        "0.1",
    ]);
    let err = assert_clean_failure(&o);
    assert!(err.contains("opening device bdev 'Nope'"), "{err}");
    assert!(err.contains("Nope"), "{err}");
}
