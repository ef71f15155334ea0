//! The conformance suite on every backend of this crate (malloc; uring and psync on files under
//! `/var/tmp`, opened through spec strings), and on deliberately broken devices to show that the
//! suite catches them and names the failing check.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use oxblob_bdev::conformance::{self, ConformanceFailure};
use oxblob_bdev::{
    BdevError, BlockDevice, Completion, DeviceInfo, IoChannel, IoOp, MallocDevice, Rejected,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

fn malloc(bs: u32) -> impl Fn() -> Arc<dyn BlockDevice> {
    move || Arc::new(MallocDevice::new("conf", bs, (16 << 20) / u64::from(bs)).unwrap())
}

fn report(backend: &str, r: Result<(), ConformanceFailure>) {
    if let Err(f) = r {
        panic!("{backend}: {f}");
    }
}

#[test]
fn malloc_4k_conforms() {
    report("malloc bs=4096", conformance::run_all(&malloc(4096)));
}

#[test]
fn malloc_512_conforms() {
    report("malloc bs=512", conformance::run_all(&malloc(512)));
}

#[test]
fn every_check_passes_individually_on_malloc() {
    let results = conformance::run_each(&malloc(4096));
    assert_eq!(results.len(), conformance::CHECKS.len());
    for (name, r) in results {
        assert!(r.is_ok(), "{name}: {r:?}");
    }
}

/// A factory of fresh 16 MiB files in a private directory under `/var/tmp`, opened by `spec`
/// (`{}` is replaced by the file's path).
fn files(spec: &'static str) -> (tempfile::TempDir, impl Fn() -> Arc<dyn BlockDevice>) {
    let dir = tempfile::Builder::new()
        .prefix("oxblob-conformance")
        .tempdir_in("/var/tmp")
        .expect("tempdir in /var/tmp");
    let root = dir.path().to_path_buf();
    let n = AtomicUsize::new(0);
    let make = move || {
        let path = root.join(format!("dev-{}.img", n.fetch_add(1, Ordering::Relaxed)));
        let spec = spec.replace("{}", &path.display().to_string());
        oxblob_bdev::spec::open(&spec).unwrap_or_else(|e| panic!("open {spec}: {e}"))
    };
    (dir, make)
}

#[test]
fn file_auto_conforms() {
    let (_dir, make) = files("file:{}?create=16MiB");
    report("file", conformance::run_all(&make));
}

#[test]
fn uring_conforms() {
    if let Some(reason) = uring_unavailable() {
        eprintln!("SKIPPED uring conformance: {reason}");
        return;
    }
    let (_dir, make) = files("uring:{}?create=16MiB");
    report("uring", conformance::run_all(&make));
}

#[test]
fn uring_buffered_512_conforms() {
    if let Some(reason) = uring_unavailable() {
        eprintln!("SKIPPED uring conformance: {reason}");
        return;
    }
    let (_dir, make) = files("uring:{}?create=16MiB&direct=0&bs=512");
    report("uring direct=0 bs=512", conformance::run_all(&make));
}

#[test]
fn psync_conforms() {
    let (_dir, make) = files("psync:{}?create=16MiB");
    report("psync", conformance::run_all(&make));
}

#[test]
fn psync_buffered_512_conforms() {
    let (_dir, make) = files("psync:{}?create=16MiB&direct=0&bs=512");
    report("psync direct=0 bs=512", conformance::run_all(&make));
}

/// Why io_uring cannot be used here, if it cannot (probing by opening a tiny device).
fn uring_unavailable() -> Option<String> {
    let dir = tempfile::tempdir_in("/var/tmp").ok()?;
    let spec = format!(
        "uring:{}?create=1MiB",
        dir.path().join("probe.img").display()
    );
    oxblob_bdev::spec::open(&spec).err().map(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Broken devices: each wraps malloc and breaks one promise.

#[derive(Clone, Copy)]
enum Breakage {
    /// Completes every 7th write successfully without writing anything.
    DropEvery7thWrite,
    /// `close()` does nothing.
    IgnoreClose,
    /// Reports every completion of a read twice.
    DuplicateReadCompletions,
}

struct Broken {
    inner: Arc<dyn BlockDevice>,
    how: Breakage,
    writes: Arc<AtomicUsize>,
    closed: AtomicBool,
}

impl BlockDevice for Broken {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }
    fn channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(BrokenChannel {
            inner: self.inner.channel()?,
            how: self.how,
            writes: Arc::clone(&self.writes),
            fake: VecDeque::new(),
        }))
    }
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if !matches!(self.how, Breakage::IgnoreClose) {
            self.inner.close();
        }
    }
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

struct BrokenChannel {
    inner: Box<dyn IoChannel>,
    how: Breakage,
    writes: Arc<AtomicUsize>,
    fake: VecDeque<Completion>,
}

impl IoChannel for BrokenChannel {
    fn submit(&mut self, token: u64, op: IoOp) -> Result<(), Rejected> {
        if matches!(self.how, Breakage::DropEvery7thWrite)
            && matches!(op, IoOp::Write { .. } | IoOp::Writev { .. })
            && (self.writes.fetch_add(1, Ordering::Relaxed) + 1) % 7 == 0
        {
            self.fake.push_back(Completion {
                token,
                result: Ok(()),
                op,
            });
            return Ok(());
        }
        self.inner.submit(token, op)
    }
    fn poll(&mut self, out: &mut Vec<Completion>, min: usize) -> Result<usize, BdevError> {
        let mut n = self.fake.len();
        out.extend(self.fake.drain(..));
        let start = out.len();
        n += self.inner.poll(out, min.saturating_sub(n))?;
        if matches!(self.how, Breakage::DuplicateReadCompletions) {
            let dups: Vec<Completion> = out[start..]
                .iter()
                .filter(|c| matches!(c.op, IoOp::Read { .. }))
                .map(|c| Completion {
                    token: c.token,
                    result: c.result.clone(),
                    op: IoOp::Flush,
                })
                .collect();
            n += dups.len();
            out.extend(dups);
        }
        Ok(n)
    }
    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.fake.len()
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

fn broken(how: Breakage) -> impl Fn() -> Arc<dyn BlockDevice> {
    move || {
        Arc::new(Broken {
            inner: malloc(4096)(),
            how,
            writes: Arc::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
        })
    }
}

#[test]
fn a_device_dropping_every_7th_write_fails_write_read() {
    let err = conformance::run_all(&broken(Breakage::DropEvery7thWrite)).unwrap_err();
    assert_eq!(err.check, "write_read", "{err}");
    // The check that submits many writes at once notices too.
    let err = conformance::queue_depth(&broken(Breakage::DropEvery7thWrite)).unwrap_err();
    assert_eq!(err.check, "queue_depth", "{err}");
    assert!(err.to_string().contains("queue_depth"), "{err}");
}

#[test]
fn a_device_ignoring_close_fails_closed_only() {
    let failed: Vec<&str> = conformance::run_each(&broken(Breakage::IgnoreClose))
        .into_iter()
        .filter(|(_, r)| r.is_err())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(failed, vec!["closed"]);
}

#[test]
fn a_device_completing_reads_twice_fails() {
    let err = conformance::run_all(&broken(Breakage::DuplicateReadCompletions)).unwrap_err();
    // The blocking helpers take the first completion and never see the duplicate; the check
    // with many requests in flight counts completions per token and does.
    assert_eq!(err.check, "queue_depth", "{err}");
    assert!(err.message.contains("completed twice"), "{err}");
}

#[test]
fn too_small_a_device_fails_geometry() {
    let make = || Arc::new(MallocDevice::new("tiny", 4096, 16).unwrap()) as Arc<dyn BlockDevice>;
    let err = conformance::run_all(&make).unwrap_err();
    assert_eq!(err.check, "geometry");
}
