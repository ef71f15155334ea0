//! Stock Debian `db_bench` loads the plugin with `LD_PRELOAD` and runs on an image: fillrandom
//! in one process, then readrandom + verifychecksum on the same image in a second process
//! with `--use_existing_db`; the Rust API reads what db_bench wrote. Errors (image in use,
//! missing image) make db_bench print the status and exit, not crash.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_rocksdb::{Db, Options};
use std::path::{Path, PathBuf};
use std::process::Output;

const NUM: u64 = 20_000;

fn tools() -> Option<(PathBuf, PathBuf)> {
    let Some(bench) = db_bench() else {
        println!("SKIP: db_bench not installed (Debian package rocksdb-tools; scripts/setup.sh)");
        return None;
    };
    let Some(so) = plugin_so() else {
        println!("SKIP: liboxblob_rocksdb.so not found next to the test binary");
        return None;
    };
    Some((bench, so))
}

fn run(bench: &Path, so: &Path, fs_uri: &str, extra: &[&str]) -> Output {
    let num = format!("--num={NUM}");
    let fs = format!("--fs_uri={fs_uri}");
    let mut args = vec![
        fs.as_str(),
        "--db=/bench/db",
        num.as_str(),
        "--value_size=200",
        "--key_size=16",
        "--threads=1",
        "--write_buffer_size=1048576",
        "--target_file_size_base=1048576",
        "--statistics=0",
    ];
    args.extend_from_slice(extra);
    std::process::Command::new(bench)
        .env("LD_PRELOAD", so)
        .args(&args)
        .output()
        .unwrap()
}

/// readrandom's "(N of 20000 found)": random keys with repeats, so most but not all are
/// found.
fn assert_most_found(o: &Output) {
    let out = String::from_utf8_lossy(&o.stdout);
    let found: u64 = out
        .split("readrandom")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(" of ").next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no found count:\n{}", text(o)));
    assert!(found > NUM / 2, "only {found} of {NUM} found:\n{}", text(o));
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn db_bench_fillrandom_then_readrandom_verifychecksum_on_existing_image() {
    let Some((bench, so)) = tools() else { return };
    let dir = scratch();
    let img = dir.path().join("bench.img");
    let o = run(
        &bench,
        &so,
        // The `key:value` option form, as the README suggests for command lines.
        &format!("{}?mkfs:1&size:1GiB", uri(&img)),
        &["--benchmarks=fillrandom"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("fillrandom"),
        "{}",
        text(&o)
    );
    assert!(
        !Path::new("/bench/db").exists(),
        "db_bench wrote to the host file system"
    );

    // A second process on the image the first one left (named with the `file:` device form).
    let o = run(
        &bench,
        &so,
        &format!("oxblob://file:{}", img.display()),
        &[
            "--benchmarks=readrandom,verifychecksum",
            "--use_existing_db=1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("verifychecksum"), "{}", text(&o));
    assert_most_found(&o);

    // The Rust API reads db_bench's database from the same image.
    let db = Db::open(
        &uri(&img),
        "/bench/db",
        &Options {
            create_if_missing: false,
            ..Default::default()
        },
    )
    .unwrap();
    let mut it = db.iter().unwrap();
    it.seek_to_first();
    let mut n = 0u64;
    while it.valid() {
        assert_eq!(it.key().unwrap().len(), 16);
        assert_eq!(it.value().unwrap().len(), 200);
        n += 1;
        it.next();
    }
    it.status().unwrap();
    assert!(n > NUM / 2 && n <= NUM, "{n} keys in db_bench's database");
    drop(it);
    db.close().unwrap();
}

/// The bench's direct mode: on a mount without a data cache, RocksDB's direct reads are
/// aligned and land straight in its buffers (the files report `use_direct_io`); table reads,
/// compaction inputs and the recovery of the log and MANIFEST all go that way. Every block's
/// checksum is verified, so a byte read wrong fails the run.
#[test]
fn db_bench_direct_reads_on_a_mount_without_cache() {
    let Some((bench, so)) = tools() else { return };
    let dir = scratch();
    let img = dir.path().join("direct.img");
    let direct = [
        "--use_direct_reads=1",
        "--use_direct_io_for_flush_and_compaction=1",
    ];
    let mut args = vec!["--benchmarks=fillrandom,compact,readrandom"];
    args.extend_from_slice(&direct);
    let o = run(
        &bench,
        &so,
        &format!("{}?mkfs:1&size:1GiB&cache:0", uri(&img)),
        &args,
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut args = vec![
        "--benchmarks=readseq,readrandom,verifychecksum",
        "--use_existing_db=1",
    ];
    args.extend_from_slice(&direct);
    let o = run(&bench, &so, &format!("{}?cache:0", uri(&img)), &args);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("verifychecksum"), "{}", text(&o));
    assert_most_found(&o);
}

#[test]
fn db_bench_reports_image_in_use_and_missing_image_without_crashing() {
    let Some((bench, so)) = tools() else { return };
    let dir = scratch();
    let img = dir.path().join("held.img");
    Db::open(&mkfs_uri(&img), "/x", &Options::default())
        .unwrap()
        .close()
        .unwrap();
    let dev = oxblob_bdev::spec::open(&format!("file:{}", img.display())).unwrap();
    let o = run(&bench, &so, &uri(&img), &["--benchmarks=fillrandom"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("in use"),
        "{}",
        text(&o)
    );
    drop(dev);

    let missing = dir.path().join("missing.img");
    let o = run(&bench, &so, &uri(&missing), &["--benchmarks=fillrandom"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not exist"),
        "{}",
        text(&o)
    );
    assert!(!missing.exists());

    // A malformed oxblob URI is an error status from the plugin, not a crash of db_bench
    // (which dies with SIGSEGV on a URI that no factory matches).
    for bad in ["oxblob://", "oxblob:/var/tmp/x.img"] {
        let o = run(&bench, &so, bad, &["--benchmarks=fillrandom"]);
        assert_eq!(o.status.code(), Some(1), "{bad}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("oxblob: bad oxblob URI"),
            "{bad}: {}",
            text(&o)
        );
    }
}
