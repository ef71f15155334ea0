//! The directory index: `readdir_from` cursors while the directory changes, `stat`'s
//! allocation without opening the blob, and a mount that rebuilds a nested tree exactly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_blobfs::{BlobFs, FileType, Metadata, OpenFlags};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Pages through `dir` with `readdir_from` (or `readdir_ino_from`) in pages of `page`.
fn list_paged(fs: &BlobFs, dir: &str, page: usize, by_ino: bool) -> Vec<String> {
    let ino = fs.stat(dir).unwrap().ino;
    let mut out: Vec<String> = Vec::new();
    loop {
        let after = out.last().map(String::as_str);
        let v = if by_ino {
            fs.readdir_ino_from(ino, after, page).unwrap()
        } else {
            fs.readdir_from(dir, after, page).unwrap()
        };
        if v.is_empty() {
            return out;
        }
        assert!(v.len() <= page);
        out.extend(v.into_iter().map(|e| e.name));
    }
}

#[test]
fn readdir_cursor_returns_stable_entries_once_under_concurrent_changes() {
    let (_d, fs) = fresh(256, 4096);
    fs.mkdir("/d").unwrap();
    const STABLE: usize = 600;
    for i in 0..STABLE {
        fs.create(&format!("/d/s{i:04}")).unwrap().close().unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Churn: names that sort between the stable ones (`s0123a`), before them (`a…`) and
    // after them (`z…`), created, renamed and removed while the reader pages.
    let writer = {
        let fs = fs.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut k = 0usize;
            let mut ops = 0usize;
            while !stop.load(Ordering::Acquire) || ops < 200 {
                let i = (k * 7919) % STABLE;
                let a = format!("/d/s{i:04}a");
                let b = format!("/d/a{k}");
                let c = format!("/d/z{k}");
                fs.create(&a).unwrap().close().unwrap();
                fs.rename(&a, &b).unwrap();
                fs.create(&c).unwrap().close().unwrap();
                fs.unlink(&b).unwrap();
                if k % 3 == 0 {
                    fs.unlink(&c).unwrap();
                }
                k += 1;
                ops += 1;
            }
            ops
        })
    };
    let stable: HashSet<String> = (0..STABLE).map(|i| format!("s{i:04}")).collect();
    for round in 0..30 {
        let names = list_paged(&fs, "/d", 1 + round % 17, round % 2 == 1);
        // Name order, no entry twice.
        assert!(names.windows(2).all(|w| w[0] < w[1]), "round {round}");
        let seen: Vec<&String> = names.iter().filter(|n| stable.contains(*n)).collect();
        assert_eq!(
            seen.len(),
            STABLE,
            "round {round}: every stable entry exactly once"
        );
    }
    stop.store(true, Ordering::Release);
    let ops = writer.join().unwrap();
    assert!(ops >= 200);
    // At rest, the pages are the whole directory in readdir's order.
    let all: Vec<String> = fs
        .readdir("/d")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(list_paged(&fs, "/d", 5, false), all);
    assert_eq!(list_paged(&fs, "/d", 64, true), all);
    // A cursor that names no entry continues after where it would sort.
    let v = fs.readdir_from("/d", Some("s0100!"), 2).unwrap();
    assert!(v.iter().all(|e| e.name.as_str() > "s0100!"));
    assert!(["s0100a", "s0101"].contains(&v[0].name.as_str()), "{v:?}");
    assert!(fs.readdir_from("/d", Some("zzzz"), 10).unwrap().is_empty());
    assert!(fs.readdir_from("/d", None, 0).unwrap().is_empty());
}

/// `stat`'s allocated bytes against the blob's own count (from the store's records).
fn check_alloc(fs: &BlobFs, path: &str) -> Metadata {
    let m = fs.stat(path).unwrap();
    let info = fs
        .store()
        .blobs()
        .unwrap()
        .into_iter()
        .find(|b| b.id == m.ino)
        .unwrap();
    let cs = fs.statfs().unwrap().cluster_size;
    assert_eq!(
        m.allocated_bytes,
        info.allocated_clusters * cs,
        "{path}: stat vs blob"
    );
    assert_eq!(
        fs.getattr(m.ino).unwrap().allocated_bytes,
        m.allocated_bytes
    );
    m
}

#[test]
fn stat_allocated_bytes_equal_what_the_blob_reports() {
    let (d, fs) = fresh(256, 4096);
    // Inline file: no cluster.
    let h = fs.create("/inline").unwrap();
    h.write_at(0, &pattern(1, 1000)).unwrap();
    h.close().unwrap();
    assert_eq!(check_alloc(&fs, "/inline").allocated_bytes, 0);
    // Clusters with a hole: clusters 0 and 3 (and whatever the hole costs: thin, none).
    let h = fs.create("/holes").unwrap();
    h.write_at(0, &pattern(2, 5000)).unwrap();
    h.write_at(3 * CLUSTER + 10, &pattern(3, 100)).unwrap();
    h.fsync().unwrap();
    // Open: from the blob record in memory.
    assert_eq!(check_alloc(&fs, "/holes").allocated_bytes, 2 * CLUSTER);
    h.close().unwrap();
    // Closed: from the inode table, refreshed at the last close.
    assert_eq!(check_alloc(&fs, "/holes").allocated_bytes, 2 * CLUSTER);
    // Shrink through a new handle, then close: the table follows.
    let h = fs
        .open("/holes", oxblob_blobfs::OpenFlags::read_write())
        .unwrap();
    h.truncate(CLUSTER + 1).unwrap();
    h.fsync().unwrap();
    check_alloc(&fs, "/holes");
    h.close().unwrap();
    let after_close = check_alloc(&fs, "/holes");
    // Grow past inline through the inode API.
    let h = fs
        .open_ino(
            fs.stat("/inline").unwrap().ino,
            oxblob_blobfs::OpenFlags::read_write(),
        )
        .unwrap();
    h.write_at(0, &pattern(4, 3 * CLUSTER as usize)).unwrap();
    h.close().unwrap();
    assert_eq!(check_alloc(&fs, "/inline").allocated_bytes, 3 * CLUSTER);
    fs.unmount().unwrap();
    // After a remount: from the records the mount visited.
    let fs = mount(&d);
    assert_eq!(
        check_alloc(&fs, "/holes").allocated_bytes,
        after_close.allocated_bytes
    );
    assert_eq!(check_alloc(&fs, "/inline").allocated_bytes, 3 * CLUSTER);
    fs.unmount().unwrap();
}

/// Every path with its metadata and, for directories, the entry order.
fn full_state(fs: &BlobFs) -> BTreeMap<String, (Metadata, Vec<String>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec!["/".to_string()];
    while let Some(dir) = stack.pop() {
        let entries = fs.readdir(&dir).unwrap();
        let names = entries.iter().map(|e| e.name.clone()).collect();
        out.insert(dir.clone(), (fs.stat(&dir).unwrap(), names));
        for e in entries {
            let p = if dir == "/" {
                format!("/{}", e.name)
            } else {
                format!("{dir}/{}", e.name)
            };
            let m = fs.stat(&p).unwrap();
            assert_eq!((m.ino, m.kind), (e.ino, e.kind), "{p}");
            match e.kind {
                FileType::Dir => stack.push(p),
                FileType::File => {
                    out.insert(p, (m, Vec::new()));
                }
            }
        }
    }
    out
}

#[test]
fn mount_rebuilds_a_nested_tree_of_thousands_of_files() {
    let (d, fs) = fresh(512, 4096);
    let mut files = 0;
    for a in 0..6 {
        for b in 0..5 {
            let dir = format!("/a{a}/b{b}/c");
            fs.mkdir_all(&dir).unwrap();
            for f in 0..120 {
                let h = fs.create(&format!("{dir}/f{f:03}")).unwrap();
                if f % 40 == 0 {
                    h.write_at(0, &pattern(f, 3000 + 40 * f as usize)).unwrap();
                }
                h.close().unwrap();
                files += 1;
            }
        }
    }
    // Renames across directories, a directory moved, unlinks, an rmdir.
    for f in (0..120).step_by(7) {
        fs.rename(&format!("/a0/b0/c/f{f:03}"), &format!("/a1/b1/moved{f:03}"))
            .unwrap();
    }
    fs.rename("/a2/b2", "/a3/b2-moved").unwrap();
    for f in (0..120).step_by(5) {
        fs.unlink(&format!("/a4/b4/c/f{f:03}")).unwrap();
    }
    fs.mkdir("/empty").unwrap();
    fs.mkdir("/gone").unwrap();
    fs.rmdir("/gone").unwrap();
    assert!(files >= 3000);
    let before = full_state(&fs);
    let inodes = fs.statfs().unwrap().files;
    fs.unmount().unwrap();
    let fs = mount(&d);
    assert_eq!(fs.statfs().unwrap().files, inodes);
    let after = full_state(&fs);
    assert_eq!(before.len(), after.len());
    for (p, (m, names)) in &before {
        let (m2, names2) = &after[p];
        assert_eq!(m, m2, "{p}");
        assert_eq!(names, names2, "{p}");
    }
    // The rebuilt index takes changes and lookups by inode.
    let root = fs.root_ino();
    let e = fs.lookup(root, "empty").unwrap();
    fs.create_at(e.ino, "new", oxblob_blobfs::OpenFlags::read_write())
        .unwrap()
        .close()
        .unwrap();
    assert_eq!(fs.readdir_ino(e.ino).unwrap()[0].name, "new");
    fs.unmount().unwrap();
}

#[test]
fn mass_delete_shrinks_the_index_and_keeps_it_consistent() {
    let (d, fs) = fresh(512, 4096);
    fs.mkdir("/m").unwrap();
    const N: usize = 12_000;
    for i in 0..N {
        fs.create(&format!("/m/f{i:05}")).unwrap().close().unwrap();
    }
    // Delete all but every 97th (the index shrinks on the way down).
    for i in (0..N).filter(|i| i % 97 != 0) {
        fs.unlink(&format!("/m/f{i:05}")).unwrap();
    }
    let left: Vec<String> = (0..N)
        .filter(|i| i % 97 == 0)
        .map(|i| format!("f{i:05}"))
        .collect();
    for n in &left {
        assert_eq!(fs.stat(&format!("/m/{n}")).unwrap().kind, FileType::File);
    }
    assert!(!fs.exists("/m/f00001").unwrap());
    assert_eq!(list_paged(&fs, "/m", 10, false), left);
    fs.unmount().unwrap();
    let fs = mount(&d);
    assert_eq!(list_paged(&fs, "/m", 1000, true), left);
    fs.unmount().unwrap();
}

#[test]
fn names_around_the_inline_length_resolve_rename_and_survive_a_mount() {
    let (d, fs) = fresh(256, 4096);
    fs.mkdir("/n").unwrap();
    // 14, 15 and 16 bytes (the slot keeps up to 15 inline), the longest name, and multi-byte
    // UTF-8 on both sides of the boundary.
    let names: Vec<String> = vec![
        "a".repeat(14),
        "b".repeat(15),
        "c".repeat(16),
        "d".repeat(255),
        "é".repeat(7),        // 14 bytes
        "ü".repeat(8),        // 16 bytes
        "x".repeat(13) + "é", // 15 bytes
    ];
    for n in &names {
        fs.create(&format!("/n/{n}")).unwrap().close().unwrap();
        fs.mkdir(&format!("/{n}")).unwrap();
        fs.create(&format!("/{n}/{n}")).unwrap().close().unwrap();
    }
    for n in &names {
        let m = fs.stat(&format!("/n/{n}")).unwrap();
        assert_eq!(fs.path_of(m.ino).unwrap(), format!("/n/{n}"));
        assert_eq!(fs.lookup(fs.stat("/n").unwrap().ino, n).unwrap(), m);
        assert_eq!(fs.stat(&format!("/{n}/{n}")).unwrap().kind, FileType::File);
        // A prefix or an extension of a name is another name.
        if n.len() < 255 {
            assert!(!fs.exists(&format!("/n/{n}z")).unwrap());
        }
        let mut prefix = n.clone();
        prefix.pop();
        assert!(!fs.exists(&format!("/n/{prefix}")).unwrap());
    }
    // Renames between short and long names, over existing entries, across directories.
    let long = "L".repeat(40);
    fs.rename(&format!("/n/{}", names[0]), &format!("/n/{long}"))
        .unwrap();
    fs.rename(&format!("/n/{}", names[2]), &format!("/n/{}", names[1]))
        .unwrap();
    fs.rename(&format!("/n/{long}"), "/n/short").unwrap();
    fs.rename(
        &format!("/{}", names[3]),
        &format!("/n/{}", "M".repeat(100)),
    )
    .unwrap();
    // An open file with a long name unlinked: an orphan until its handle closes.
    let h = fs
        .open(&format!("/n/{}", names[5]), OpenFlags::read_write())
        .unwrap();
    fs.unlink(&format!("/n/{}", names[5])).unwrap();
    assert!(fs.path_of(h.ino()).is_err());
    assert!(!fs.exists(&format!("/n/{}", names[5])).unwrap());
    h.close().unwrap();
    let mut expect: Vec<String> = vec![
        names[1].clone(),
        names[4].clone(),
        names[6].clone(),
        names[3].clone(),
        "M".repeat(100),
        "short".to_string(),
    ];
    expect.sort();
    assert_eq!(list_paged(&fs, "/n", 2, false), expect);
    let before = full_state(&fs);
    fs.unmount().unwrap();
    let fs = mount(&d);
    assert_eq!(full_state(&fs), before);
    assert_eq!(
        fs.stat(&format!("/n/{}/{}", "M".repeat(100), names[3]))
            .unwrap()
            .kind,
        FileType::File
    );
    fs.unmount().unwrap();
}
