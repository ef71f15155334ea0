//! Measures what a crash sweep costs on a realistic history: 3000 writes (1–16 blocks) with a
//! flush every 8 writes on a 64 MiB device; prints memory held and time per image.
//!
//! `cargo run --release -p oxblob-sim --example crash_image_cost`

#![allow(clippy::unwrap_used, clippy::expect_used)] // example code

use oxblob_bdev::{blocking, BlockDevice, MallocDevice};
use oxblob_sim::rng::rng;
use oxblob_sim::{CrashDevice, CrashMode};
use rand::Rng;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    const BS: usize = 4096;
    let blocks = (64 << 20) / BS as u64;
    let inner: Arc<dyn BlockDevice> = Arc::new(MallocDevice::new("m", BS as u32, blocks).unwrap());
    let crash = CrashDevice::new(inner).unwrap();
    let mut ch = crash.channel().unwrap();
    let mut r = rng(1);
    let mut payload = 0usize;
    let t = Instant::now();
    for i in 0..3000u32 {
        let n = r.gen_range(1..=16u64);
        let at = r.gen_range(0..blocks - n) * BS as u64;
        let data = vec![(i % 251) as u8 + 1; n as usize * BS];
        payload += data.len();
        blocking::write_slice(ch.as_mut(), at, &data).unwrap();
        if i % 8 == 7 {
            blocking::flush(ch.as_mut()).unwrap();
        }
    }
    println!(
        "workload: 3000 writes, {} events, {} flush points, {:.1} MiB of payload recorded, {:?}",
        crash.history_len(),
        crash.flush_points().len(),
        payload as f64 / (1 << 20) as f64,
        t.elapsed()
    );
    for mode in [CrashMode::DropAll, CrashMode::KeepAll, CrashMode::Random] {
        let points = [0, crash.history_len() / 2, crash.history_len()];
        let t = Instant::now();
        for &p in &points {
            std::hint::black_box(crash.image_bytes_at(p, 7, mode).unwrap());
        }
        let bytes = t.elapsed() / points.len() as u32;
        let t = Instant::now();
        for &p in &points {
            std::hint::black_box(crash.image_at(p, 7, mode).unwrap());
        }
        let dev = t.elapsed() / points.len() as u32;
        println!("{mode:?}: image_bytes_at {bytes:?}/image, image_at (MallocDevice) {dev:?}/image");
    }
}
