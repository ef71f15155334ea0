//! Namespace operations and every error kind, file data byte for byte at random offsets,
//! truncate, unlink while open, inline files, remount with and without unmount.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_blobfs::{BlobFs, FileType, FsErrorKind, MountOptions, OpenFlags, INLINE_MAX, NAME_MAX};
use rand::{Rng, SeedableRng};
use std::sync::Arc;

fn kind<T: std::fmt::Debug>(r: oxblob_blobfs::Result<T>) -> FsErrorKind {
    r.expect_err("expected an error").kind
}

#[test]
fn namespace_and_error_kinds() {
    let (_d, fs) = fresh(32, 4096);
    fs.mkdir("/a").unwrap();
    fs.mkdir("/a/b").unwrap();
    fs.create("/a/f").unwrap().close().unwrap();
    assert_eq!(kind(fs.mkdir("/a")), FsErrorKind::Exists);
    assert_eq!(kind(fs.mkdir("/a/f")), FsErrorKind::Exists);
    assert_eq!(kind(fs.mkdir("/")), FsErrorKind::Exists);
    assert_eq!(kind(fs.mkdir("/x/y")), FsErrorKind::NotFound);
    assert_eq!(kind(fs.mkdir("/a/f/y")), FsErrorKind::NotADirectory);
    assert_eq!(
        kind(fs.open("/a/nope", OpenFlags::read())),
        FsErrorKind::NotFound
    );
    assert_eq!(
        kind(fs.open("/a", OpenFlags::read())),
        FsErrorKind::IsADirectory
    );
    assert_eq!(
        kind(fs.open("/", OpenFlags::read())),
        FsErrorKind::IsADirectory
    );
    let excl = OpenFlags {
        create: true,
        exclusive: true,
        ..OpenFlags::read_write()
    };
    assert_eq!(kind(fs.open("/a/f", excl)), FsErrorKind::Exists);
    assert_eq!(
        kind(fs.open("/a/f", OpenFlags::default())),
        FsErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(fs.open("a/f", OpenFlags::read())),
        FsErrorKind::InvalidArgument
    );
    let long = format!("/{}", "n".repeat(NAME_MAX + 1));
    let e = fs.create(&long).unwrap_err();
    assert_eq!(e.kind, FsErrorKind::NameTooLong);
    assert_eq!(e.errno(), libc_enametoolong());
    assert_eq!(e.path, long);
    let ok = format!("/{}", "n".repeat(NAME_MAX));
    fs.create(&ok).unwrap().close().unwrap();
    assert!(fs.exists(&ok).unwrap());
    assert_eq!(kind(fs.rmdir("/a")), FsErrorKind::NotEmpty);
    assert_eq!(kind(fs.rmdir("/a/f")), FsErrorKind::NotADirectory);
    assert_eq!(kind(fs.rmdir("/a/zz")), FsErrorKind::NotFound);
    assert_eq!(kind(fs.rmdir("/")), FsErrorKind::InvalidArgument);
    assert_eq!(kind(fs.unlink("/a/b")), FsErrorKind::IsADirectory);
    assert_eq!(kind(fs.unlink("/a/zz")), FsErrorKind::NotFound);
    assert_eq!(kind(fs.readdir("/a/f")), FsErrorKind::NotADirectory);
    assert_eq!(kind(fs.stat("/a/f/g")), FsErrorKind::NotADirectory);
    assert!(!fs.exists("/a/f/g").unwrap());
    // Rename errors.
    assert_eq!(
        kind(fs.rename("/a", "/a/b/c")),
        FsErrorKind::InvalidArgument
    );
    assert_eq!(kind(fs.rename("/a", "/a/c")), FsErrorKind::InvalidArgument);
    assert_eq!(kind(fs.rename("/a/f", "/a/b")), FsErrorKind::IsADirectory);
    fs.mkdir("/d").unwrap();
    assert_eq!(kind(fs.rename("/d", "/a/f")), FsErrorKind::NotADirectory);
    assert_eq!(kind(fs.rename("/d", "/")), FsErrorKind::InvalidArgument);
    fs.create("/a/b/inner").unwrap().close().unwrap();
    assert_eq!(kind(fs.rename("/d", "/a/b")), FsErrorKind::NotEmpty);
    assert_eq!(kind(fs.rename("/nope", "/z")), FsErrorKind::NotFound);
    assert_eq!(kind(fs.rename("/d", "/nodir/z")), FsErrorKind::NotFound);
    // errno mapping.
    assert_eq!(fs.rmdir("/a").unwrap_err().errno(), 39);
    assert_eq!(fs.open("/q", OpenFlags::read()).unwrap_err().errno(), 2);
    // readdir: sorted, with kinds and inodes that stat agrees with.
    let names: Vec<(String, FileType)> = fs
        .readdir("/a")
        .unwrap()
        .into_iter()
        .map(|e| {
            assert_eq!(fs.stat(&format!("/a/{}", e.name)).unwrap().ino, e.ino);
            (e.name, e.kind)
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("b".to_string(), FileType::Dir),
            ("f".to_string(), FileType::File)
        ]
    );
    // `.` and `..` resolve lexically.
    assert_eq!(
        fs.stat("/a/./b/../f").unwrap().ino,
        fs.stat("/a/f").unwrap().ino
    );
}

fn libc_enametoolong() -> i32 {
    36
}

#[test]
fn rename_moves_files_and_whole_directories() {
    let (d, fs) = fresh(32, 4096);
    fs.mkdir_all("/x/y/z").unwrap();
    fs.mkdir_all("/x/y/z").unwrap();
    let h = fs.create("/x/y/z/f").unwrap();
    h.write_at(0, b"hello").unwrap();
    h.close().unwrap();
    let ino = fs.stat("/x/y").unwrap().ino;
    fs.rename("/x/y", "/moved").unwrap();
    assert!(!fs.exists("/x/y").unwrap());
    assert_eq!(fs.stat("/moved").unwrap().ino, ino);
    let h = fs.open("/moved/z/f", OpenFlags::read()).unwrap();
    assert_eq!(h.read_vec(0, 10).unwrap(), b"hello");
    drop(h);
    // Replace a file; the replaced inode is gone.
    let h = fs.create("/t").unwrap();
    h.write_at(0, b"old").unwrap();
    h.close().unwrap();
    let before = fs.statfs().unwrap().files;
    fs.rename("/moved/z/f", "/t").unwrap();
    assert_eq!(fs.statfs().unwrap().files, before - 1);
    assert!(!fs.exists("/moved/z/f").unwrap());
    // Replace an empty directory.
    fs.mkdir("/e").unwrap();
    fs.rename("/moved/z", "/e").unwrap();
    assert_eq!(fs.readdir("/e").unwrap().len(), 0);
    assert_eq!(fs.readdir("/moved").unwrap().len(), 0);
    // Same name: no-op.
    fs.rename("/t", "/t").unwrap();
    fs.unmount().unwrap();
    let fs = mount(&d);
    let h = fs.open("/t", OpenFlags::read()).unwrap();
    assert_eq!(h.read_vec(0, 10).unwrap(), b"hello");
    assert!(fs.exists("/e").unwrap());
    assert!(fs.exists("/moved").unwrap());
    assert!(!fs.exists("/x/y").unwrap());
    fs.rename("/x", "/moved/x").unwrap();
    assert!(fs.exists("/moved/x").unwrap());
}

/// Writes at random offsets and lengths against a `Vec` model, crossing the inline limit,
/// io units and clusters; reads back at random ranges; then remounts.
#[test]
fn random_offsets_byte_for_byte() {
    for block in [512u32, 4096] {
        let (d, fs) = fresh(64, block);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(u64::from(block));
        let h = fs.create("/f").unwrap();
        let mut model: Vec<u8> = Vec::new();
        for i in 0..200u64 {
            let max_off = if i < 40 {
                INLINE_MAX + 100
            } else {
                5 * CLUSTER
            };
            let off = rng.gen_range(0..max_off);
            let len = rng.gen_range(1..if i % 10 == 0 { 3 * CLUSTER } else { 9000 }) as usize;
            let data = pattern(i, len);
            h.write_at(off, &data).unwrap();
            let end = off as usize + len;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&data);
            assert_eq!(h.len(), model.len() as u64);
            let ro = rng.gen_range(0..model.len() as u64 + 10);
            let rl = rng.gen_range(0..20_000usize);
            let got = h.read_vec(ro, rl).unwrap();
            let s = (ro as usize).min(model.len());
            let e = (s + rl).min(model.len());
            assert_eq!(got, model[s..e], "step {i}: read {rl} at {ro}");
        }
        assert_eq!(h.read_vec(0, model.len()).unwrap(), model);
        assert!(fs.stat("/f").unwrap().allocated_bytes > 0);
        h.close().unwrap();
        fs.unmount().unwrap();
        let fs = mount(&d);
        let h = fs.open("/f", OpenFlags::read()).unwrap();
        assert_eq!(h.len(), model.len() as u64);
        assert_eq!(h.read_vec(0, model.len() + 5).unwrap(), model);
    }
}

#[test]
fn truncate_shrink_and_grow_with_zero_holes() {
    let (d, fs) = fresh(32, 4096);
    let h = fs.create("/f").unwrap();
    let data = pattern(7, (3 * CLUSTER + 1000) as usize);
    h.write_at(0, &data).unwrap();
    let full_alloc = fs.stat("/f").unwrap().allocated_bytes;
    assert_eq!(full_alloc, 4 * CLUSTER);
    // Shrink into the middle of the second cluster: clusters 2 and 3 are freed.
    let cut = CLUSTER + 777;
    h.truncate(cut).unwrap();
    assert_eq!(h.len(), cut);
    assert_eq!(fs.stat("/f").unwrap().allocated_bytes, 2 * CLUSTER);
    assert_eq!(h.read_vec(0, data.len()).unwrap(), data[..cut as usize]);
    // Grow: everything past the cut reads as zeroes, including the old bytes' place.
    h.truncate(4 * CLUSTER).unwrap();
    let mut model = data[..cut as usize].to_vec();
    model.resize(4 * CLUSTER as usize, 0);
    assert_eq!(h.read_vec(0, model.len()).unwrap(), model);
    // A write far past the end leaves a hole of zeroes.
    h.write_at(6 * CLUSTER + 5, b"tail").unwrap();
    model.resize(6 * CLUSTER as usize + 5, 0);
    model.extend_from_slice(b"tail");
    assert_eq!(h.read_vec(0, model.len()).unwrap(), model);
    // Shrink to an odd size inside an io unit, then grow by writing past it.
    h.truncate(100).unwrap();
    h.write_at(5000, b"x").unwrap();
    let mut m2 = data[..100].to_vec();
    m2.resize(5000, 0);
    m2.push(b'x');
    assert_eq!(h.read_vec(0, 10_000).unwrap(), m2);
    h.fsync().unwrap();
    drop(h);
    drop(fs); // no unmount: only fsync'ed state counts
    let fs = mount(&d);
    let h = fs.open("/f", OpenFlags::read()).unwrap();
    assert_eq!(h.read_vec(0, 10_000).unwrap(), m2);
    // Inline truncate.
    let g = fs.create("/g").unwrap();
    g.write_at(0, b"abcdef").unwrap();
    g.truncate(3).unwrap();
    g.truncate(5).unwrap();
    assert_eq!(g.read_vec(0, 10).unwrap(), b"abc\0\0");
    assert_eq!(fs.stat("/g").unwrap().allocated_bytes, 0);
    assert_eq!(
        kind(fs.open("/g", OpenFlags::read()).unwrap().truncate(0)),
        FsErrorKind::BadHandle
    );
}

#[test]
fn unlink_while_open_readable_until_close_then_gone() {
    let (d, fs) = fresh(32, 4096);
    let big = pattern(3, 200_000);
    for (path, data) in [("/small", b"tiny".to_vec()), ("/big", big.clone())] {
        let h = fs.create(path).unwrap();
        h.write_at(0, &data).unwrap();
        h.fsync().unwrap();
        let free_before = fs.statfs().unwrap().free_bytes;
        fs.unlink(path).unwrap();
        assert!(!fs.exists(path).unwrap());
        assert_eq!(
            kind(fs.open(path, OpenFlags::read())),
            FsErrorKind::NotFound
        );
        // The handle still reads and writes.
        assert_eq!(h.read_vec(0, data.len()).unwrap(), data);
        h.write_at(0, b"XY").unwrap();
        assert_eq!(h.read_vec(0, 2).unwrap(), b"XY");
        // A new file may take the name.
        fs.create(path).unwrap().close().unwrap();
        assert_eq!(fs.stat(path).unwrap().size, 0);
        h.close().unwrap();
        assert!(fs.statfs().unwrap().free_bytes >= free_before);
        assert_eq!(fs.stat(path).unwrap().size, 0);
    }
    let files = fs.statfs().unwrap().files;
    // Unlinked while open, then a crash (no close, no unmount): gone after mount.
    let h = fs.create("/orph").unwrap();
    h.write_at(0, &big).unwrap();
    h.fsync().unwrap();
    fs.unlink("/orph").unwrap();
    let free_open = fs.statfs().unwrap().free_bytes;
    std::mem::forget(h);
    drop(fs);
    let fs = mount(&d);
    assert!(!fs.exists("/orph").unwrap());
    assert_eq!(fs.statfs().unwrap().files, files);
    assert!(fs.statfs().unwrap().free_bytes > free_open);
    assert_eq!(fs.store().blobs().unwrap().len() as u64, files);
    // Rename over an open file: the handle keeps the old contents.
    let a = fs.create("/a").unwrap();
    a.write_at(0, b"AAAA").unwrap();
    let b = fs.create("/b").unwrap();
    b.write_at(0, b"BB").unwrap();
    b.close().unwrap();
    fs.rename("/b", "/a").unwrap();
    assert_eq!(a.read_vec(0, 10).unwrap(), b"AAAA");
    let r = fs.open("/a", OpenFlags::read()).unwrap();
    assert_eq!(r.read_vec(0, 10).unwrap(), b"BB");
    a.close().unwrap();
    assert_eq!(fs.store().blobs().unwrap().len() as u64, files + 1);
}

#[test]
fn handles_share_one_inode_and_append() {
    let (_d, fs) = fresh(32, 4096);
    let a = fs.create("/f").unwrap();
    let b = fs
        .open(
            "/f",
            OpenFlags {
                append: true,
                ..OpenFlags::read_write()
            },
        )
        .unwrap();
    a.write_at(0, b"0123").unwrap();
    assert_eq!(b.len(), 4);
    b.write_at(0, b"ab").unwrap(); // append flag: goes to the end
    assert_eq!(b.append(b"cd").unwrap(), 6);
    assert_eq!(a.read_vec(0, 100).unwrap(), b"0123abcd");
    assert_eq!(fs.stat("/f").unwrap().size, 8);
    let r = fs.open("/f", OpenFlags::read()).unwrap();
    assert_eq!(kind(r.write_at(0, b"z")), FsErrorKind::BadHandle);
    let w = fs
        .open(
            "/f",
            OpenFlags {
                read: false,
                write: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(kind(w.read_vec(0, 1)), FsErrorKind::BadHandle);
}

#[test]
fn remount_keeps_fsynced_and_namespace_ops() {
    let (d, fs) = fresh(32, 4096);
    fs.mkdir_all("/p/q").unwrap();
    let h = fs.create("/p/q/synced").unwrap();
    let data = pattern(11, 300_000);
    h.write_at(0, &data).unwrap();
    h.fsync().unwrap();
    let s = fs.create("/p/small").unwrap();
    s.write_at(0, b"inline data").unwrap();
    s.fdatasync().unwrap();
    let st_before = fs.stat("/p/q/synced").unwrap();
    fs.create("/p/empty").unwrap().close().unwrap();
    // Not synced: may or may not survive, but must not break anything.
    h.write_at(data.len() as u64, b"unsynced").unwrap();
    std::mem::forget(h);
    std::mem::forget(s);
    drop(fs);
    let fs = mount(&d);
    let h = fs.open("/p/q/synced", OpenFlags::read()).unwrap();
    let n = h.len() as usize;
    assert!(n == data.len() || n == data.len() + 8, "size {n}");
    assert_eq!(h.read_vec(0, data.len()).unwrap(), data);
    assert_eq!(fs.stat("/p/q/synced").unwrap().ino, st_before.ino);
    let s = fs.open("/p/small", OpenFlags::read()).unwrap();
    assert_eq!(s.read_vec(0, 100).unwrap(), b"inline data");
    assert_eq!(fs.stat("/p/small").unwrap().allocated_bytes, 0);
    assert!(fs.exists("/p/empty").unwrap());
    drop((h, s));
    fs.unmount().unwrap();
    assert_eq!(kind(fs.stat("/p")), FsErrorKind::Io);
    // Read-only mount refuses changes.
    let ro = BlobFs::mount(
        Arc::clone(&d),
        MountOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(kind(ro.mkdir("/z")), FsErrorKind::ReadOnly);
    assert_eq!(kind(ro.create("/z")), FsErrorKind::ReadOnly);
    assert!(ro.exists("/p/empty").unwrap());
}

#[test]
fn mount_rejects_a_non_blobfs_store() {
    let d = dev(16, 4096);
    oxblob_blobstore::BlobStore::init(
        Arc::clone(&d),
        oxblob_blobstore::InitOptions {
            cluster_size: CLUSTER,
            md_segment_pages: 4,
            md_pages: Some(64),
            bstype: oxblob_blobstore::bstype("OTHER"),
        },
    )
    .unwrap()
    .unload()
    .unwrap();
    assert_eq!(
        kind(BlobFs::mount(Arc::clone(&d), MountOptions::default())),
        FsErrorKind::Corrupt
    );
    let blank = dev(16, 4096);
    assert_eq!(
        kind(BlobFs::mount(blank, MountOptions::default())),
        FsErrorKind::Corrupt
    );
}
