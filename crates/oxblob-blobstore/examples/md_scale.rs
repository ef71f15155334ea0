//! Metadata scaling measurement: for each N, create N blobs with 3 small xattrs (one
//! transaction each, as blobfs creates an inode), update one xattr of each blob and sync it, load
//! after a crash (store dropped without unload) and after a clean unload, then delete every blob.
//! Prints ops/s per phase.
//!
//! ```text
//! cargo run --release -p oxblob-blobstore --example md_scale -- 10000 100000 1000000
//! cargo run --release -p oxblob-blobstore --example md_scale -- --file /var/tmp/md.img 2000
//! ```
//!
//! On a malloc device flushes are free, so this measures CPU cost per operation. With `--file`
//! the store lives on a sparse file (buffered psync I/O, every flush an `fdatasync`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use oxblob_bdev::{BlockDevice, FileOptions, MallocDevice, PsyncDevice};
use oxblob_blobstore::{BlobStore, CreateOptions, InitOptions, LoadOptions};
use std::sync::Arc;
use std::time::Instant;

fn device(file: Option<&str>, bytes: u64) -> Arc<dyn BlockDevice> {
    match file {
        Some(p) => {
            let _ = std::fs::remove_file(p);
            Arc::new(
                PsyncDevice::open(
                    p,
                    &FileOptions {
                        direct: false,
                        create_size: Some(bytes),
                        ..FileOptions::default()
                    },
                )
                .unwrap(),
            )
        }
        None => Arc::new(MallocDevice::new("scale", 4096, bytes / 4096).unwrap()),
    }
}

fn rate(n: u64, t: Instant) -> String {
    let s = t.elapsed().as_secs_f64();
    format!("{:>9.0} ops/s ({s:.2} s)", n as f64 / s)
}

fn run(n: u64, file: Option<&str>) {
    // About 1 KiB of md region per blob (a record here is ~100 bytes; log records are whole
    // pages), at least 64 MiB.
    let md_bytes = (n * 1024).max(64 << 20);
    let md_pages = md_bytes / 4096;
    let dev_bytes = md_bytes + (64 << 20);
    let dev = device(file, dev_bytes);
    let bs = BlobStore::init(
        Arc::clone(&dev),
        InitOptions {
            md_pages: Some(md_pages),
            ..InitOptions::default()
        },
    )
    .unwrap();
    println!(
        "N = {n}: md region {} MiB, {}",
        md_bytes >> 20,
        if file.is_some() { "file" } else { "malloc" }
    );

    let t = Instant::now();
    let mut ids = Vec::with_capacity(n as usize);
    for i in 0..n {
        let id = bs
            .transaction(|t| {
                t.create(CreateOptions {
                    num_clusters: 0,
                    thin: true,
                    xattrs: vec![
                        ("size".into(), i.to_le_bytes().to_vec()),
                        ("mtime".into(), i.to_le_bytes().to_vec()),
                        ("name".into(), format!("f{i}").into_bytes()),
                    ],
                })
            })
            .unwrap();
        ids.push(id);
    }
    println!("  create          {}", rate(n, t));

    let t = Instant::now();
    for (i, &id) in ids.iter().enumerate() {
        let b = bs.open_blob(id).unwrap();
        b.set_xattr("mtime", &(i as u64 + 1).to_le_bytes()).unwrap();
        b.sync_md().unwrap();
        b.close().unwrap();
    }
    println!("  xattr+sync      {}", rate(n, t));

    // Crash: drop the store without unloading (on malloc every completed write is durable).
    drop(bs);
    let t = Instant::now();
    let bs = BlobStore::load(Arc::clone(&dev), LoadOptions::default()).unwrap();
    println!(
        "  load after crash          {:.3} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    bs.unload().unwrap();
    println!(
        "  unload                    {:.3} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let bs = BlobStore::load(Arc::clone(&dev), LoadOptions::default()).unwrap();
    println!(
        "  load after clean unload   {:.3} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(bs.blobs().unwrap().len() as u64, n);

    let t = Instant::now();
    for &id in &ids {
        bs.delete_blob(id).unwrap();
    }
    println!("  delete          {}", rate(n, t));
    bs.unload().unwrap();
    drop(dev);
    if let Some(p) = file {
        let _ = std::fs::remove_file(p);
    }
}

fn main() {
    let mut file = None;
    let mut ns = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--file" {
            file = args.next();
        } else {
            ns.push(a.parse::<u64>().expect("N"));
        }
    }
    if ns.is_empty() {
        ns = vec![10_000, 100_000];
    }
    for n in ns {
        run(n, file.as_deref());
    }
}
