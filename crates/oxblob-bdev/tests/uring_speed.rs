//! A quick random-I/O loop to compare the uring backend with fio by hand. Prints figures and
//! asserts nothing about speed; ignored by default. Run with
//! `OXBLOB_SPEED_FILE=/var/tmp/f cargo test --release -p oxblob-bdev --test uring_speed -- --ignored --nocapture`
//! (the file must exist, e.g. the one fio made; default `/var/tmp/oxblob-speed.img`, created at
//! 1 GiB). The `oxblob bench bdev` command is the real benchmark.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use oxblob_bdev::{spec, FileOptions, IoBuf, IoOp};
use std::time::{Duration, Instant};

fn run(spec_str: &str, bs: usize, qd: usize, write: bool, secs: u64) -> f64 {
    let dev = spec::open_with(
        spec_str,
        &FileOptions {
            create_size: Some(1 << 30),
            ..FileOptions::default()
        },
    )
    .unwrap();
    let blocks = dev.info().size_bytes() / bs as u64;
    let mut ch = dev.channel().unwrap();
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % blocks * bs as u64
    };
    let mut bufs: Vec<IoBuf> = (0..qd).map(|_| IoBuf::filled(bs, 0x5A)).collect();
    let mut out = Vec::with_capacity(qd);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut done = 0u64;
    loop {
        while let Some(buf) = bufs.pop() {
            let offset = next();
            let op = if write {
                IoOp::Write { offset, buf }
            } else {
                IoOp::Read { offset, buf }
            };
            ch.submit(0, op).unwrap();
        }
        out.clear();
        ch.poll(&mut out, 1).unwrap();
        for c in out.drain(..) {
            c.result.unwrap();
            bufs.push(c.op.into_buf().unwrap());
            done += 1;
        }
        if Instant::now() >= end {
            break;
        }
    }
    while ch.in_flight() > 0 {
        ch.poll(&mut out, 1).unwrap();
    }
    done as f64 / start.elapsed().as_secs_f64()
}

#[test]
#[ignore = "manual speed check; prints IOPS"]
fn random_io_speed() {
    let file = std::env::var("OXBLOB_SPEED_FILE")
        .unwrap_or_else(|_| "/var/tmp/oxblob-speed.img".to_string());
    let secs: u64 = std::env::var("OXBLOB_SPEED_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    for (kind, bs, qd) in [
        ("uring", 4096, 1),
        ("uring", 4096, 32),
        ("uring", 131072, 8),
    ] {
        let iops = run(&format!("{kind}:{file}"), bs, qd, false, secs);
        println!(
            "{kind} randread bs={bs} qd={qd}: {iops:.0} IOPS, {:.1} MiB/s",
            iops * bs as f64 / 1048576.0
        );
    }
}
