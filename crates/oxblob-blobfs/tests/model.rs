//! Model-based test: random sequences of namespace and data operations run against the file
//! system and against an in-memory model (a `BTreeMap` of paths); after every step the whole
//! tree (names, types, contents byte for byte) and each operation's result (success or error
//! kind) must agree, including across clean remounts and mounts without unmount (every
//! operation here completes with a close, so everything is durable).
//!
//! 48 cases by default; `OXBLOB_FULL=1` runs 1,000.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_blobfs::{BlobFs, FsErrorKind, OpenFlags};
use proptest::prelude::*;
use std::collections::BTreeMap;

type Tree = BTreeMap<String, Option<Vec<u8>>>;

/// Paths: depth 1 and 2 over three names.
fn paths() -> Vec<String> {
    let names = ["a", "b", "c"];
    let mut v: Vec<String> = names.iter().map(|n| format!("/{n}")).collect();
    for p in names {
        for c in names {
            v.push(format!("/{p}/{c}"));
        }
    }
    v
}

#[derive(Debug, Clone)]
enum Op {
    Mkdir(usize),
    Write(usize, u64, usize, u64),
    Truncate(usize, u64),
    Unlink(usize),
    Rmdir(usize),
    Rename(usize, usize),
    Remount,
    DropAndMount,
}

fn op() -> impl Strategy<Value = Op> {
    let n = paths().len();
    let off = prop_oneof![0u64..3000, 0u64..300_000];
    let len = prop_oneof![0usize..3000, 0usize..150_000];
    prop_oneof![
        3 => (0..n).prop_map(Op::Mkdir),
        5 => (0..n, off, len, any::<u64>()).prop_map(|(p, o, l, s)| Op::Write(p, o, l, s)),
        2 => (0..n, prop_oneof![0u64..4000, 0u64..300_000]).prop_map(|(p, l)| Op::Truncate(p, l)),
        2 => (0..n).prop_map(Op::Unlink),
        2 => (0..n).prop_map(Op::Rmdir),
        3 => (0..n, 0..n).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => Just(Op::Remount),
        1 => Just(Op::DropAndMount),
    ]
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

/// The model's answer to "does the parent of `p` exist as a directory".
fn check_parent(m: &Tree, p: &str) -> Result<(), FsErrorKind> {
    let par = parent(p);
    if par == "/" {
        return Ok(());
    }
    match m.get(par) {
        None => Err(FsErrorKind::NotFound),
        Some(Some(_)) => Err(FsErrorKind::NotADirectory),
        Some(None) => Ok(()),
    }
}

fn has_children(m: &Tree, p: &str) -> bool {
    let pre = format!("{p}/");
    m.keys().any(|k| k.starts_with(&pre))
}

/// Applies `op` to the model; returns the expected result.
fn model_apply(m: &mut Tree, op: &Op) -> Result<(), FsErrorKind> {
    let ps = paths();
    match *op {
        Op::Mkdir(i) => {
            let p = &ps[i];
            check_parent(m, p)?;
            if m.contains_key(p) {
                return Err(FsErrorKind::Exists);
            }
            m.insert(p.clone(), None);
        }
        Op::Write(i, off, len, seed) => {
            let p = &ps[i];
            check_parent(m, p)?;
            match m.entry(p.clone()).or_insert_with(|| Some(Vec::new())) {
                None => return Err(FsErrorKind::IsADirectory),
                Some(v) => {
                    let data = pattern(seed, len);
                    let (o, e) = (off as usize, off as usize + len);
                    if len > 0 {
                        if v.len() < e {
                            v.resize(e, 0);
                        }
                        v[o..e].copy_from_slice(&data);
                    }
                }
            }
        }
        Op::Truncate(i, len) => {
            let p = &ps[i];
            check_parent(m, p)?;
            match m.get_mut(p) {
                None => return Err(FsErrorKind::NotFound),
                Some(None) => return Err(FsErrorKind::IsADirectory),
                Some(Some(v)) => v.resize(len as usize, 0),
            }
        }
        Op::Unlink(i) => {
            let p = &ps[i];
            check_parent(m, p)?;
            match m.get(p) {
                None => return Err(FsErrorKind::NotFound),
                Some(None) => return Err(FsErrorKind::IsADirectory),
                Some(Some(_)) => {
                    m.remove(p);
                }
            }
        }
        Op::Rmdir(i) => {
            let p = &ps[i];
            check_parent(m, p)?;
            match m.get(p) {
                None => return Err(FsErrorKind::NotFound),
                Some(Some(_)) => return Err(FsErrorKind::NotADirectory),
                Some(None) if has_children(m, p) => return Err(FsErrorKind::NotEmpty),
                Some(None) => {
                    m.remove(p);
                }
            }
        }
        Op::Rename(a, b) => {
            let (a, b) = (&ps[a], &ps[b]);
            check_parent(m, a)?;
            let src = m.get(a).ok_or(FsErrorKind::NotFound)?.clone();
            check_parent(m, b)?;
            let dpar = parent(b);
            if src.is_none() && (dpar == a || dpar.starts_with(&format!("{a}/"))) {
                return Err(FsErrorKind::InvalidArgument);
            }
            if a == b {
                return Ok(());
            }
            match (&src, m.get(b)) {
                (Some(_), Some(None)) => return Err(FsErrorKind::IsADirectory),
                (None, Some(Some(_))) => return Err(FsErrorKind::NotADirectory),
                (None, Some(None)) if has_children(m, b) => return Err(FsErrorKind::NotEmpty),
                _ => {}
            }
            m.remove(b);
            let pre = format!("{a}/");
            let moved: Vec<(String, Option<Vec<u8>>)> = m
                .iter()
                .filter(|(k, _)| k.starts_with(&pre))
                .map(|(k, v)| (format!("{b}/{}", &k[pre.len()..]), v.clone()))
                .collect();
            m.retain(|k, _| k != a && !k.starts_with(&pre));
            m.insert(b.clone(), src);
            m.extend(moved);
        }
        Op::Remount | Op::DropAndMount => {}
    }
    Ok(())
}

fn fs_apply(
    fs: &mut BlobFs,
    d: &std::sync::Arc<dyn oxblob_bdev::BlockDevice>,
    op: &Op,
) -> Result<(), FsErrorKind> {
    let ps = paths();
    let k = |e: oxblob_blobfs::FsError| e.kind;
    match *op {
        Op::Mkdir(i) => fs.mkdir(&ps[i]).map(|_| ()).map_err(k),
        Op::Write(i, off, len, seed) => {
            let flags = OpenFlags {
                create: true,
                ..OpenFlags::read_write()
            };
            let h = fs.open(&ps[i], flags).map_err(k)?;
            if len > 0 {
                h.write_at(off, &pattern(seed, len)).map_err(k)?;
            }
            h.close().map_err(k)
        }
        Op::Truncate(i, len) => {
            let h = fs.open(&ps[i], OpenFlags::read_write()).map_err(k)?;
            h.truncate(len).map_err(k)?;
            h.close().map_err(k)
        }
        Op::Unlink(i) => fs.unlink(&ps[i]).map_err(k),
        Op::Rmdir(i) => fs.rmdir(&ps[i]).map_err(k),
        Op::Rename(a, b) => fs.rename(&ps[a], &ps[b]).map_err(k),
        Op::Remount => {
            fs.unmount().map_err(k)?;
            *fs = mount(d);
            Ok(())
        }
        Op::DropAndMount => {
            *fs = mount(d);
            Ok(())
        }
    }
}

fn cases() -> u32 {
    if std::env::var("OXBLOB_FULL").is_ok_and(|v| v == "1") {
        1000
    } else {
        48
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let (d, mut fs) = fresh(64, 4096);
        let mut model = Tree::new();
        for (i, op) in ops.iter().enumerate() {
            let want = model_apply(&mut model, op);
            let got = fs_apply(&mut fs, &d, op);
            prop_assert_eq!(got, want, "step {} {:?}", i, op);
            prop_assert_eq!(&snapshot(&fs), &model, "tree after step {} {:?}", i, op);
        }
        fs.unmount().unwrap();
        let fs = mount(&d);
        prop_assert_eq!(&snapshot(&fs), &model, "tree after the final remount");
        prop_assert_eq!(fs.store().blobs().unwrap().len(), model.len() + 1);
    }
}
