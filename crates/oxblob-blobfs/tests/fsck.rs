//! blobfs `fsck`: a clean image is clean; every kind of namespace damage, crafted through the
//! blobstore API (xattrs set behind the file system's back), is found by kind and inode; the
//! repair moves dangling inodes to /lost+found (data intact, byte for byte) or removes them, and
//! the repaired image mounts and checks clean.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use oxblob_bdev::{BlockDevice, MallocDevice};
use oxblob_blobfs::{
    fsck, BlobFs, FileType, FsErrorKind, FsckOptions, FsckReport, MkfsOptions, MountOptions,
    NsFindingKind, OpenFlags, BSTYPE,
};
use oxblob_blobstore::{bstype, BlobStore, LoadOptions, Severity};
use std::sync::Arc;

fn dev() -> Arc<dyn BlockDevice> {
    Arc::new(MallocDevice::new("fsck", 4096, 64 * 256).unwrap())
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A formatted image with /a (dir), /a/f (100 KiB file), /a/b (dir), /g (small file).
/// Returns the device and the inodes of a, f, b, g.
fn populated() -> (Arc<dyn BlockDevice>, [u64; 4]) {
    let d = dev();
    BlobFs::mkfs(
        Arc::clone(&d),
        MkfsOptions {
            cluster_size: 64 * 1024,
            md_segment_pages: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let fs = BlobFs::mount(Arc::clone(&d), MountOptions::default()).unwrap();
    let a = fs.mkdir("/a").unwrap();
    let h = fs.create("/a/f").unwrap();
    h.write_at(0, &pattern(1, 100 * 1024)).unwrap();
    let f = h.ino();
    h.close().unwrap();
    let b = fs.mkdir("/a/b").unwrap();
    let h = fs.create("/g").unwrap();
    h.write_at(0, b"small").unwrap();
    let g = h.ino();
    h.close().unwrap();
    fs.unmount().unwrap();
    (d, [a, f, b, g])
}

/// Changes blobs behind the file system's back, in one transaction.
fn tamper(d: &Arc<dyn BlockDevice>, f: impl FnOnce(&mut oxblob_blobstore::Txn)) {
    let bs = BlobStore::load(
        Arc::clone(d),
        LoadOptions {
            bstype: bstype(BSTYPE),
            read_only: false,
        },
    )
    .unwrap();
    bs.transaction(|t| {
        f(t);
        Ok(())
    })
    .unwrap();
    bs.unload().unwrap();
}

fn check(d: &Arc<dyn BlockDevice>) -> FsckReport {
    fsck(d, FsckOptions { repair: false }).unwrap()
}

fn repair(d: &Arc<dyn BlockDevice>) -> FsckReport {
    fsck(d, FsckOptions { repair: true }).unwrap()
}

fn errors_of(r: &FsckReport) -> Vec<(NsFindingKind, Option<u64>)> {
    r.findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| (f.kind, f.ino))
        .collect()
}

fn read_all(fs: &BlobFs, path: &str) -> Vec<u8> {
    let h = fs.open(path, OpenFlags::read()).unwrap();
    h.read_vec(0, h.len() as usize).unwrap()
}

#[test]
fn clean_image_is_clean_with_counts() {
    let (d, _) = populated();
    let r = check(&d);
    assert!(r.is_clean(), "{r}");
    assert!(r.findings.is_empty(), "{r}");
    assert_eq!((r.dirs, r.files, r.orphans), (3, 2, 0));
    assert!(r.to_string().ends_with("clean"), "{r}");
    // A repair of a clean image changes nothing.
    let r = repair(&d);
    assert!(r.is_clean() && r.repairs.is_empty(), "{r}");
    let fs = BlobFs::mount(d, MountOptions::default()).unwrap();
    assert!(!fs.exists("/lost+found").unwrap());
}

#[test]
fn missing_parent_is_found_and_repaired_into_lost_found() {
    let (d, [_, f, _, _]) = populated();
    tamper(&d, |t| t.set_xattr(f, "parent", &9999u64.to_le_bytes()));
    // The mount refuses the damaged namespace.
    let e = BlobFs::mount(Arc::clone(&d), MountOptions::default()).unwrap_err();
    assert_eq!(e.kind, FsErrorKind::Corrupt);
    let r = check(&d);
    assert!(!r.is_clean());
    assert_eq!(errors_of(&r), vec![(NsFindingKind::ParentMissing, Some(f))]);
    let msg = &r.findings[0].message;
    assert!(
        msg.contains("names parent 9999, which does not exist"),
        "{msg}"
    );
    assert!(r
        .to_string()
        .contains("DAMAGED: 0 blobstore errors, 1 namespace errors"));

    let r = repair(&d);
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.repairs.len(), 2, "{:?}", r.repairs);
    assert!(
        r.repairs[0].starts_with("created /lost+found"),
        "{:?}",
        r.repairs
    );
    assert_eq!(
        r.repairs[1],
        format!("moved file {f} (was \"f\") to /lost+found/#{f}")
    );
    assert_eq!(r.after_repair.as_deref(), Some(&[][..]));
    assert!(check(&d).is_clean());

    let fs = BlobFs::mount(d, MountOptions::default()).unwrap();
    assert_eq!(
        read_all(&fs, &format!("/lost+found/#{f}")),
        pattern(1, 100 * 1024)
    );
    let names: Vec<String> = fs
        .readdir("/a")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["b"]);
    assert_eq!(fs.stat("/lost+found").unwrap().kind, FileType::Dir);
    fs.unmount().unwrap();
}

#[test]
fn parent_that_is_a_file_and_duplicate_names() {
    let (d, [a, f, b, g]) = populated();
    tamper(&d, |t| {
        // /a/b now claims to live in the file /g; /g claims the name "f" in /a.
        t.set_xattr(b, "parent", &g.to_le_bytes());
        t.set_xattr(g, "parent", &a.to_le_bytes());
        t.set_xattr(g, "name", b"f");
    });
    let r = check(&d);
    let mut errs = errors_of(&r);
    errs.sort_by_key(|e| e.1);
    let mut want = vec![
        (NsFindingKind::ParentNotDirectory, Some(b)),
        (NsFindingKind::DuplicateName, Some(f.max(g))),
    ];
    want.sort_by_key(|e| e.1);
    assert_eq!(errs, want, "{r}");
    let dup = r
        .findings
        .iter()
        .find(|x| x.kind == NsFindingKind::DuplicateName)
        .unwrap();
    assert!(
        dup.message.contains("are both named \"f\""),
        "{}",
        dup.message
    );

    let r = repair(&d);
    assert!(r.is_clean(), "{r}");
    let fs = BlobFs::mount(d, MountOptions::default()).unwrap();
    let mut lf: Vec<String> = fs
        .readdir("/lost+found")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    lf.sort();
    let mut want = vec![format!("#{b}"), format!("#{}", f.max(g))];
    want.sort();
    assert_eq!(lf, want);
    // The lower inode keeps the name.
    assert_eq!(fs.stat("/a/f").unwrap().ino, f.min(g));
}

#[test]
fn parent_cycle_is_found_and_broken() {
    let (d, [a, _, b, _]) = populated();
    // /a's parent becomes /a/b: a -> b -> a, cut off from the root.
    tamper(&d, |t| t.set_xattr(a, "parent", &b.to_le_bytes()));
    let r = check(&d);
    assert_eq!(
        errors_of(&r),
        vec![(NsFindingKind::Cycle, Some(a.max(b)))],
        "{r}"
    );
    assert!(r.findings[0].message.contains("form a parent cycle"));
    let r = repair(&d);
    assert!(r.is_clean(), "{r}");
    let fs = BlobFs::mount(d, MountOptions::default()).unwrap();
    // Whichever of the two was moved, the file under /a is reachable again, intact.
    let hi = a.max(b);
    let path = if hi == a {
        format!("/lost+found/#{a}/f")
    } else {
        format!("/lost+found/#{b}/a/f")
    };
    assert_eq!(read_all(&fs, &path), pattern(1, 100 * 1024));
}

#[test]
fn bad_type_is_removed_and_bad_name_moved() {
    let (d, [_, f, _, g]) = populated();
    tamper(&d, |t| {
        t.set_xattr(g, "type", &[7]);
        t.set_xattr(f, "name", b"x/y");
    });
    let r = check(&d);
    let mut errs = errors_of(&r);
    errs.sort_by_key(|e| e.1);
    let mut want = vec![
        (NsFindingKind::BadInode, Some(g)),
        (NsFindingKind::BadName, Some(f)),
    ];
    want.sort_by_key(|e| e.1);
    assert_eq!(errs, want, "{r}");
    let r = repair(&d);
    assert!(r.is_clean(), "{r}");
    assert!(
        r.repairs.contains(&format!("removed inode {g} \"g\"")),
        "{:?}",
        r.repairs
    );
    let fs = BlobFs::mount(d, MountOptions::default()).unwrap();
    assert!(!fs.exists("/g").unwrap());
    assert_eq!(
        read_all(&fs, &format!("/lost+found/#{f}")),
        pattern(1, 100 * 1024)
    );
}

#[test]
fn orphan_after_crash_is_info_and_repair_removes_it() {
    let (d, _) = populated();
    let fs = BlobFs::mount(Arc::clone(&d), MountOptions::default()).unwrap();
    let h = fs.open("/g", OpenFlags::read()).unwrap();
    let ino = h.ino();
    fs.unlink("/g").unwrap();
    // A crash: the handle and the mount vanish without close or unmount.
    std::mem::forget(h);
    drop(fs);
    let r = check(&d);
    assert!(r.is_clean(), "orphans are not damage: {r}");
    assert_eq!(r.orphans, 1);
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].kind, NsFindingKind::Orphan);
    assert_eq!(r.findings[0].severity, Severity::Info);
    assert_eq!(r.findings[0].ino, Some(ino));
    let r = repair(&d);
    assert_eq!(r.repairs, vec![format!("removed orphan file {ino}")]);
    let r = check(&d);
    assert_eq!((r.orphans, r.findings.len()), (0, 0), "{r}");
}

#[test]
fn missing_root_is_not_repairable() {
    let (d, _) = populated();
    tamper(&d, |t| t.set_super_blob(None));
    let r = check(&d);
    assert_eq!(r.findings[0].kind, NsFindingKind::RootMissing);
    let r = repair(&d);
    assert!(!r.is_clean());
    assert_eq!(r.unrepaired.len(), 1, "{r}");
    assert!(r.unrepaired[0].contains("no root directory"));
}

#[test]
fn another_blobstore_type_is_an_error() {
    let d = dev();
    BlobStore::init(
        Arc::clone(&d),
        oxblob_blobstore::InitOptions {
            bstype: bstype("OTHER"),
            ..Default::default()
        },
    )
    .unwrap()
    .unload()
    .unwrap();
    let e = fsck(&d, FsckOptions::default()).unwrap_err();
    assert_eq!(e.kind, FsErrorKind::InvalidArgument);
    assert!(e.detail.contains("type mismatch"), "{}", e.detail);
}
