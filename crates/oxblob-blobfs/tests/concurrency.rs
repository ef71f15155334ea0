//! Concurrency: 8 threads create, write, read, rename and delete files in their own
//! directories and in one shared directory, and append records to one shared file through
//! their own handles. Each thread checks its reads as it goes; at the end the tree and the
//! shared file are checked against the per-thread models, before and after a remount.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_blobfs::{FsErrorKind, OpenFlags};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

const THREADS: usize = 8;
const REC: usize = 64;

fn record(t: usize, seq: u32) -> Vec<u8> {
    let mut r = vec![t as u8; REC];
    r[..4].copy_from_slice(&seq.to_le_bytes());
    r[4] = 0xA5;
    r
}

#[test]
fn eight_threads_against_per_thread_models() {
    let (d, fs) = fresh(128, 4096);
    fs.mkdir("/shared").unwrap();
    fs.create("/log").unwrap().close().unwrap();
    let iters = if std::env::var("OXBLOB_FULL").is_ok_and(|v| v == "1") {
        600
    } else {
        120
    };
    let models: Vec<(BTreeMap<String, Vec<u8>>, u32)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let fs = fs.clone();
                s.spawn(move || {
                    let mut rng = rand::rngs::SmallRng::seed_from_u64(t as u64);
                    let own = format!("/t{t}");
                    fs.mkdir(&own).unwrap();
                    let log = fs
                        .open(
                            "/log",
                            OpenFlags {
                                append: true,
                                ..OpenFlags::read_write()
                            },
                        )
                        .unwrap();
                    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                    let mut appended = 0u32;
                    for i in 0..iters {
                        let dir = if rng.gen_bool(0.5) {
                            own.clone()
                        } else {
                            "/shared".into()
                        };
                        let path = format!("{dir}/t{t}_{}", rng.gen_range(0..6));
                        match rng.gen_range(0..6) {
                            0 | 1 => {
                                let len = if rng.gen_bool(0.5) {
                                    rng.gen_range(0..2000)
                                } else {
                                    rng.gen_range(0..200_000)
                                };
                                let off = rng.gen_range(0..50_000u64);
                                let data = pattern((t * 100_000 + i) as u64, len);
                                let h = fs
                                    .open(
                                        &path,
                                        OpenFlags {
                                            create: true,
                                            ..OpenFlags::read_write()
                                        },
                                    )
                                    .unwrap();
                                h.write_at(off, &data).unwrap();
                                let m = model.entry(path.clone()).or_default();
                                if len > 0 {
                                    let e = off as usize + len;
                                    if m.len() < e {
                                        m.resize(e, 0);
                                    }
                                    m[off as usize..e].copy_from_slice(&data);
                                }
                                assert_eq!(h.read_vec(0, m.len() + 1).unwrap(), *m, "{path}");
                                if rng.gen_bool(0.3) {
                                    h.fsync().unwrap();
                                }
                                h.close().unwrap();
                            }
                            2 => match model.get(&path) {
                                Some(m) => {
                                    let h = fs.open(&path, OpenFlags::read()).unwrap();
                                    assert_eq!(h.read_vec(0, m.len() + 1).unwrap(), *m, "{path}");
                                }
                                None => assert_eq!(
                                    fs.open(&path, OpenFlags::read()).unwrap_err().kind,
                                    FsErrorKind::NotFound
                                ),
                            },
                            3 => {
                                let to_dir = if rng.gen_bool(0.5) {
                                    own.clone()
                                } else {
                                    "/shared".into()
                                };
                                let to = format!("{to_dir}/t{t}_{}", rng.gen_range(0..6));
                                match model.remove(&path) {
                                    Some(m) => {
                                        fs.rename(&path, &to).unwrap();
                                        model.insert(to, m);
                                    }
                                    None => assert_eq!(
                                        fs.rename(&path, &to).unwrap_err().kind,
                                        FsErrorKind::NotFound
                                    ),
                                }
                            }
                            4 => match model.remove(&path) {
                                Some(_) => fs.unlink(&path).unwrap(),
                                None => assert_eq!(
                                    fs.unlink(&path).unwrap_err().kind,
                                    FsErrorKind::NotFound
                                ),
                            },
                            _ => {
                                log.append(&record(t, appended)).unwrap();
                                appended += 1;
                            }
                        }
                    }
                    log.close().unwrap();
                    (model, appended)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let check = |fs: &oxblob_blobfs::BlobFs| {
        let snap = snapshot(fs);
        let mut want: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        want.insert("/shared".into(), None);
        want.insert(
            "/log".into(),
            snap.get("/log").cloned().flatten().map(Some).unwrap(),
        );
        for (t, (m, _)) in models.iter().enumerate() {
            want.insert(format!("/t{t}"), None);
            for (p, v) in m {
                want.insert(p.clone(), Some(v.clone()));
            }
        }
        assert_eq!(snap, want);
        // Every appended record is whole and appears exactly once, in per-thread order.
        let log = snap["/log"].clone().unwrap();
        let total: u32 = models.iter().map(|(_, a)| a).sum();
        assert_eq!(log.len(), total as usize * REC);
        let mut next = [0u32; THREADS];
        for r in log.chunks(REC) {
            let t = r[5] as usize;
            assert!(t < THREADS, "bad record {r:?}");
            let seq = u32::from_le_bytes(r[..4].try_into().unwrap());
            assert_eq!(seq, next[t], "thread {t} records out of order");
            assert_eq!(r, record(t, seq).as_slice());
            next[t] += 1;
        }
        assert!(next.iter().zip(&models).all(|(n, (_, a))| n == a));
    };
    check(&fs);
    fs.unmount().unwrap();
    let fs = mount(&d);
    check(&fs);
    assert_eq!(
        fs.store().blobs().unwrap().len() as u64,
        fs.statfs().unwrap().files
    );
}
