//! The oxblob-bdev conformance suite on every wrapper of this crate with its faults off, over
//! malloc, and on a stack of all of them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use oxblob_bdev::conformance;
use oxblob_bdev::{BlockDevice, IoKind, MallocDevice};
use oxblob_sim::{CountingDevice, CrashDevice, ErrorDevice, Fault, TransformDevice};
use std::sync::Arc;

fn malloc() -> Arc<dyn BlockDevice> {
    Arc::new(MallocDevice::new("inner", 4096, 4096).unwrap())
}

fn check(name: &str, make: &dyn Fn() -> Arc<dyn BlockDevice>) {
    if let Err(f) = conformance::run_all(make) {
        panic!("{name}: {f}");
    }
}

#[test]
fn error_device_disarmed_conforms() {
    check("error (no fault armed)", &|| ErrorDevice::new(malloc()));
}

#[test]
fn error_device_with_a_fault_that_never_matches_conforms() {
    // Armed, but on a range the suite never touches: every request still goes through the
    // fault check (and its counter) without being failed.
    check("error (armed elsewhere)", &|| {
        let dev = ErrorDevice::new(malloc());
        let size = dev.info().size_bytes();
        dev.faults()
            .arm(Fault::always().kind(IoKind::Write).range(size / 2, 4096));
        dev
    });
}

#[test]
fn crash_device_conforms() {
    check("crash", &|| CrashDevice::new(malloc()).unwrap());
}

#[test]
fn transform_device_conforms() {
    check("transform", &|| TransformDevice::new(malloc(), 0x1234_5678));
}

#[test]
fn counting_device_conforms() {
    check("counting", &|| CountingDevice::new(malloc()));
}

#[test]
fn a_stack_of_every_wrapper_conforms() {
    check("counting/error/transform/crash/malloc", &|| {
        let crash = CrashDevice::new(malloc()).unwrap();
        let transform = TransformDevice::new(crash, 99);
        CountingDevice::new(ErrorDevice::new(transform))
    });
}
