//! A real FUSE mount served in-process: data round trips and every error by errno, as seen
//! through ordinary file operations on the mount point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use oxblob_blobfs::{BlobFs, MkfsOptions, MountOptions};
use oxblob_fuse::{spawn, MountConfig, Mounted};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A mounted image in a temp dir; unmounts on drop, even when a test fails.
struct Guard {
    m: Option<Mounted>,
    mp: PathBuf,
    img: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(m) = self.m.take() {
            if m.unmount().is_err() {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.mp)
                    .status();
            }
        }
    }
}

fn fuse_available() -> bool {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: /dev/fuse is missing");
        return false;
    }
    true
}

fn mount_image(img: &Path, mp: &Path) -> Mounted {
    let dev = oxblob_bdev::spec::open(img.to_str().unwrap()).unwrap();
    let fs = BlobFs::mount(dev, MountOptions::default()).unwrap();
    spawn(fs, mp, &MountConfig::default()).unwrap()
}

fn setup() -> Option<Guard> {
    setup_with(256, MkfsOptions::default())
}

fn setup_with(mib: u64, mkfs: MkfsOptions) -> Option<Guard> {
    if !fuse_available() {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("oxblob-fuse-test")
        .tempdir_in("/var/tmp")
        .unwrap();
    let img = dir.path().join("img");
    let spec = format!("file:{}?create={mib}MiB", img.display());
    BlobFs::mkfs(oxblob_bdev::spec::open(&spec).unwrap(), mkfs).unwrap();
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let m = mount_image(&img, &mp);
    Some(Guard {
        m: Some(m),
        mp,
        img,
        _dir: dir,
    })
}

impl Guard {
    fn remount(&mut self) {
        self.m.take().unwrap().unmount().unwrap();
        self.m = Some(mount_image(&self.img, &self.mp));
    }
}

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected an error").raw_os_error().unwrap()
}

#[test]
fn errors_by_errno() {
    let Some(g) = setup() else { return };
    let mp = &g.mp;
    std::fs::create_dir(mp.join("d")).unwrap();
    std::fs::create_dir(mp.join("d/sub")).unwrap();
    std::fs::write(mp.join("d/f"), b"x").unwrap();
    assert_eq!(errno(std::fs::remove_dir(mp.join("d"))), libc::ENOTEMPTY);
    assert_eq!(
        errno(std::fs::rename(mp.join("d"), mp.join("d/sub/d2"))),
        libc::EINVAL
    );
    let long = "n".repeat(256);
    assert_eq!(
        errno(std::fs::write(mp.join(&long), b"x")),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno(std::fs::create_dir(mp.join(&long))),
        libc::ENAMETOOLONG
    );
    std::fs::write(mp.join("n".repeat(255)), b"ok").unwrap();
    assert_eq!(
        errno(std::fs::remove_file(mp.join("missing"))),
        libc::ENOENT
    );
    assert_eq!(errno(std::fs::remove_dir(mp.join("d/f"))), libc::ENOTDIR);
    assert_eq!(errno(std::fs::remove_file(mp.join("d/sub"))), libc::EISDIR);
    assert_eq!(errno(std::fs::create_dir(mp.join("d"))), libc::EEXIST);
    // Unsupported: fallocate (every mode), links, xattrs, special files.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mp.join("d/f"))
        .unwrap();
    use rustix::fs::{fallocate, FallocateFlags};
    let punch = fallocate(
        &f,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        0,
        4096,
    );
    assert_eq!(punch, Err(rustix::io::Errno::OPNOTSUPP));
    assert_eq!(
        fallocate(&f, FallocateFlags::empty(), 0, 1 << 20),
        Err(rustix::io::Errno::OPNOTSUPP)
    );
    assert_eq!(
        errno(std::os::unix::fs::symlink("f", mp.join("d/link"))),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        errno(std::fs::hard_link(mp.join("d/f"), mp.join("d/hard"))),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        rustix::fs::setxattr(
            mp.join("d/f"),
            "user.x",
            b"v",
            rustix::fs::XattrFlags::empty()
        ),
        Err(rustix::io::Errno::OPNOTSUPP)
    );
    let mut buf = [0u8; 16];
    assert_eq!(
        rustix::fs::getxattr(mp.join("d/f"), "user.x", &mut buf),
        Err(rustix::io::Errno::OPNOTSUPP)
    );
    assert_eq!(
        rustix::fs::mknodat(
            rustix::fs::CWD,
            mp.join("d/fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0
        ),
        Err(rustix::io::Errno::OPNOTSUPP)
    );
    // Rename flags: NOREPLACE refuses an existing target, EXCHANGE is not supported.
    std::fs::write(mp.join("a"), b"a").unwrap();
    std::fs::write(mp.join("b"), b"b").unwrap();
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    assert_eq!(
        renameat_with(CWD, mp.join("a"), CWD, mp.join("b"), RenameFlags::NOREPLACE),
        Err(rustix::io::Errno::EXIST)
    );
    assert_eq!(
        renameat_with(CWD, mp.join("a"), CWD, mp.join("b"), RenameFlags::EXCHANGE),
        Err(rustix::io::Errno::INVAL)
    );
    renameat_with(CWD, mp.join("a"), CWD, mp.join("c"), RenameFlags::NOREPLACE).unwrap();
    assert_eq!(std::fs::read(mp.join("c")).unwrap(), b"a");
    assert_eq!(errno(std::fs::metadata(mp.join("a"))), libc::ENOENT);
    // Fixed ownership and modes: the fixed values are accepted, others refused.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(mp.join("c"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        errno(std::fs::set_permissions(
            mp.join("c"),
            std::fs::Permissions::from_mode(0o600)
        )),
        libc::EPERM
    );
    drop(f);
}

#[test]
fn data_at_any_offset_truncate_and_times_survive_remount() {
    let Some(mut g) = setup() else { return };
    let p = g.mp.join("big");
    let mut model = vec![0u8; 0];
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    let mut seed = 7u64;
    for i in 0..40u64 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (seed >> 33) % (6 << 20);
        let len = 1 + ((seed >> 13) % (300 * 1024)) as usize;
        let data: Vec<u8> = (0..len)
            .map(|j| (i as u8) ^ (j as u8).wrapping_mul(31))
            .collect();
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&data).unwrap();
        let end = off as usize + len;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(&data);
    }
    f.set_len(5 << 20).unwrap();
    model.resize(5 << 20, 0);
    f.sync_all().unwrap();
    drop(f);
    // A directory tree and an mtime set explicitly.
    std::fs::create_dir_all(g.mp.join("x/y/z")).unwrap();
    std::fs::write(g.mp.join("x/y/z/small"), b"small file").unwrap();
    let st = std::process::Command::new("touch")
        .args(["-d", "2001-02-03 04:05:06"])
        .arg(g.mp.join("x/y/z/small"))
        .status()
        .unwrap();
    assert!(st.success());
    g.remount();
    let mut got = Vec::new();
    std::fs::File::open(&p)
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got.len(), model.len());
    assert!(got == model, "data differs after remount");
    assert_eq!(
        std::fs::read(g.mp.join("x/y/z/small")).unwrap(),
        b"small file"
    );
    let mtime = std::fs::metadata(g.mp.join("x/y/z/small"))
        .unwrap()
        .modified()
        .unwrap();
    let want = std::process::Command::new("date")
        .args(["-d", "2001-02-03 04:05:06", "+%s"])
        .output()
        .unwrap();
    let want: u64 = String::from_utf8(want.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        mtime
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        want
    );
    // statfs reports the real totals.
    let s = rustix::fs::statvfs(&g.mp).unwrap();
    let fs_total = s.f_blocks * s.f_frsize;
    assert!(fs_total > 200 << 20 && fs_total < 256 << 20, "{fs_total}");
    assert!(s.f_bfree < s.f_blocks);
    assert_eq!(s.f_namemax, 255);
    // Free inodes come from the metadata's room (a quarter of the 32 MiB md region, at
    // least 128 bytes an inode), not from the free data blocks.
    assert!(
        s.f_ffree > 10_000 && s.f_ffree <= (8 << 20) / 128,
        "{}",
        s.f_ffree
    );
    assert!(s.f_files > s.f_ffree);
}

/// A mount whose metadata fills up: creates fail with ENOSPC while the data region is nearly
/// empty, `statvfs` shows no free inodes, and an unlink still works and makes room.
#[test]
fn full_metadata_gives_enospc_and_unlink_still_works() {
    let Some(g) = setup_with(
        16,
        MkfsOptions {
            md_fraction: 64,
            ..MkfsOptions::default()
        },
    ) else {
        return;
    };
    let name = |i: u32| g.mp.join(format!("{}{i:05}", "f".repeat(200)));
    let mut n = 0u32;
    let err = loop {
        match std::fs::File::create(name(n)) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 100_000, "the metadata never filled");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(n > 100, "{n} files");
    let s = rustix::fs::statvfs(&g.mp).unwrap();
    assert!(s.f_ffree < 8, "{} free inodes", s.f_ffree);
    assert!(
        s.f_bfree * 10 > s.f_blocks * 9,
        "{} of {} blocks free",
        s.f_bfree,
        s.f_blocks
    );
    std::fs::remove_file(name(0)).unwrap();
    std::fs::remove_file(name(1)).unwrap();
    std::fs::File::create(g.mp.join("after")).unwrap();
    let s = rustix::fs::statvfs(&g.mp).unwrap();
    assert!(
        s.f_ffree >= 1,
        "{} free inodes after two unlinks",
        s.f_ffree
    );
}
