//! `oxblob mount` / `oxblob umount` on real images with real tools: cp -r and diff -r across a
//! remount, fio with crc32c verification across a remount, tar, a second mount refused,
//! SIGTERM and SIGKILL of the daemon.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn oxblob() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oxblob"))
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sh(cmd: &str, args: &[&str]) -> String {
    ok(Command::new(cmd).args(args).output().unwrap())
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An image in a fresh temp dir under /var/tmp and a mount point; unmounts on drop.
struct Fixture {
    dir: tempfile::TempDir,
    img: PathBuf,
    mp: PathBuf,
}

impl Fixture {
    fn new(size: &str) -> Option<Fixture> {
        if !Path::new("/dev/fuse").exists() {
            eprintln!("skipped: /dev/fuse is missing");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("oxblob-mount-test")
            .tempdir_in("/var/tmp")
            .unwrap();
        let img = dir.path().join("img");
        let mp = dir.path().join("mnt");
        std::fs::create_dir(&mp).unwrap();
        ok(oxblob()
            .arg("mkfs")
            .arg(&img)
            .args(["--size", size])
            .output()
            .unwrap());
        Some(Fixture { dir, img, mp })
    }

    fn mount(&self) {
        let out = ok(oxblob()
            .arg("mount")
            .arg(&self.img)
            .arg(&self.mp)
            .output()
            .unwrap());
        assert!(out.contains("mounted"), "{out}");
    }

    fn umount(&self) {
        ok(oxblob().arg("umount").arg(&self.mp).output().unwrap());
    }

    fn mounted(&self) -> bool {
        let mp = self.mp.canonicalize().unwrap();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        info.lines()
            .any(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap()))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.mounted() {
            let _ = oxblob().arg("umount").arg(&self.mp).output();
        }
        if self.mounted() {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
        }
        let _ = self.dir.path();
    }
}

#[test]
fn cp_r_diff_r_across_remount_and_tar() {
    let Some(f) = Fixture::new("512MiB") else {
        return;
    };
    f.mount();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../oxblob-bdev");
    let src = src.canonicalize().unwrap();
    sh(
        "cp",
        &[
            "-r",
            src.to_str().unwrap(),
            f.mp.join("bdev").to_str().unwrap(),
        ],
    );
    // A generated archive: nested dirs, empty files, files across the inline limit and
    // over a cluster, extracted into the mount and compared by checksum.
    let gen = f.dir.path().join("gen");
    for i in 0..30usize {
        let d = gen.join(format!("d{}/e{}", i % 5, i % 3));
        std::fs::create_dir_all(&d).unwrap();
        let len = [0usize, 1, 2047, 2048, 2049, 4096, 70_000, 1_500_000][i % 8];
        let data: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
        std::fs::write(d.join(format!("f{i}")), data).unwrap();
    }
    let tarball = f.dir.path().join("gen.tar");
    sh(
        "tar",
        &[
            "-cf",
            tarball.to_str().unwrap(),
            "-C",
            gen.to_str().unwrap(),
            ".",
        ],
    );
    std::fs::create_dir(f.mp.join("x")).unwrap();
    sh(
        "tar",
        &[
            "-xf",
            tarball.to_str().unwrap(),
            "-C",
            f.mp.join("x").to_str().unwrap(),
        ],
    );
    f.umount();
    assert!(!f.mounted());
    f.mount();
    sh(
        "diff",
        &[
            "-r",
            src.to_str().unwrap(),
            f.mp.join("bdev").to_str().unwrap(),
        ],
    );
    let sums = |root: &Path| {
        sh(
            "sh",
            &[
                "-c",
                &format!(
                    "cd '{}' && find . -type f -print0 | sort -z | xargs -0 sha256sum",
                    root.display()
                ),
            ],
        )
    };
    let want = sums(&gen);
    assert!(want.lines().count() == 30);
    assert_eq!(sums(&f.mp.join("x")), want);
    // df shows the image's real totals.
    let df = sh(
        "df",
        &["-B1", "--output=size,avail", f.mp.to_str().unwrap()],
    );
    let nums: Vec<u64> = df
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(nums[0] > 400 << 20 && nums[0] < 512 << 20, "{df}");
    assert!(nums[1] < nums[0], "{df}");
    f.umount();
}

#[test]
fn second_mount_is_refused_and_umount_errors() {
    let Some(f) = Fixture::new("128MiB") else {
        return;
    };
    f.mount();
    let mp2 = f.dir.path().join("mnt2");
    std::fs::create_dir(&mp2).unwrap();
    let o = oxblob()
        .arg("mount")
        .arg(&f.img)
        .arg(&mp2)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "oxblob: mount {}: {} is in use",
            f.img.display(),
            f.img.display()
        )),
        "{err}"
    );
    // A mount point that is not empty is refused before anything is opened.
    std::fs::write(mp2.join("x"), b"x").unwrap();
    let o = oxblob()
        .arg("mount")
        .arg(&f.img)
        .arg(&mp2)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
    f.umount();
    let o = oxblob().arg("umount").arg(&f.mp).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not mounted"));
}

#[test]
fn fio_verify_across_remount() {
    if !have("fio") {
        eprintln!("skipped: fio is not installed");
        return;
    }
    let Some(f) = Fixture::new("512MiB") else {
        return;
    };
    f.mount();
    let job = |extra: &[&str]| {
        let mut a = vec![
            "--name=v".to_string(),
            format!("--directory={}", f.mp.display()),
            "--rw=randwrite".into(),
            "--bs=4k".into(),
            "--size=16m".into(),
            "--numjobs=3".into(),
            "--ioengine=psync".into(),
            "--fallocate=none".into(),
            "--verify=crc32c".into(),
            "--do_verify=1".into(),
            "--randrepeat=1".into(),
            // No verify-state files in the working directory.
            "--verify_state_save=0".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        let o = Command::new("fio").args(&a).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!out.contains("verify: bad"), "{out}");
    };
    job(&[]);
    f.umount();
    f.mount();
    job(&["--verify_only"]);
    f.umount();
}

#[test]
fn fsynced_data_survives_sigkill_and_sigterm_unmounts_cleanly() {
    let Some(f) = Fixture::new("128MiB") else {
        return;
    };
    // Foreground daemon we can signal.
    let mut child = oxblob()
        .arg("mount")
        .arg("--foreground")
        .arg(&f.img)
        .arg(&f.mp)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !f.mounted() {
        assert!(t0.elapsed().as_secs() < 30, "mount did not appear");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    {
        use std::io::Write;
        let mut file = std::fs::File::create(f.mp.join("kept")).unwrap();
        file.write_all(&data).unwrap();
        file.sync_all().unwrap();
        std::fs::create_dir(f.mp.join("dir")).unwrap();
        std::fs::write(f.mp.join("dir/small"), b"tiny").unwrap();
        let small = std::fs::File::open(f.mp.join("dir/small")).unwrap();
        small.sync_all().unwrap();
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let _ = Command::new("umount").arg("-l").arg(&f.mp).status();
    assert!(!f.mounted());
    // Remount (recovery after the crash) and check what was fsync'ed.
    let mut child = oxblob()
        .arg("mount")
        .arg("--foreground")
        .arg(&f.img)
        .arg(&f.mp)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !f.mounted() {
        assert!(t0.elapsed().as_secs() < 30, "remount did not appear");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(std::fs::read(f.mp.join("kept")).unwrap() == data);
    assert_eq!(std::fs::read(f.mp.join("dir/small")).unwrap(), b"tiny");
    std::fs::write(f.mp.join("after"), b"written before SIGTERM").unwrap();
    // SIGTERM: unmounts, persists, exits 0.
    ok(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .output()
        .unwrap());
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
    assert!(!f.mounted());
    // The image is clean and released: the CLI reads it directly.
    let out = ok(oxblob()
        .arg("cat")
        .arg(&f.img)
        .arg("/after")
        .output()
        .unwrap());
    assert_eq!(out, "written before SIGTERM");
    let o = oxblob().arg("fsck").arg(&f.img).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

/// A RocksDB database created in the mount by stock `db_bench`, the mount unmounted and mounted
/// again, then read back and checksummed by a second `db_bench` process.
#[test]
fn rocksdb_database_in_the_mount_survives_a_remount() {
    if !have("db_bench") {
        eprintln!("skipped: db_bench is not installed (rocksdb-tools)");
        return;
    }
    let Some(f) = Fixture::new("1GiB") else {
        return;
    };
    f.mount();
    // db_bench creates only the last component of --db, as on any file system.
    std::fs::create_dir(f.mp.join("rocks")).unwrap();
    let db = f.mp.join("rocks/db");
    let common = [
        format!("--db={}", db.display()),
        "--num=20000".to_string(),
        "--key_size=16".to_string(),
        "--value_size=200".to_string(),
        "--compression_type=none".to_string(),
        "--progress_reports=false".to_string(),
        "--write_buffer_size=1048576".to_string(),
        "--target_file_size_base=1048576".to_string(),
    ];
    let fill = ok(Command::new("db_bench")
        .args(&common)
        .args(["--benchmarks=fillseq,compact", "--sync=1"])
        .output()
        .unwrap());
    assert!(fill.contains("fillseq"), "{fill}");
    f.umount();
    assert!(!f.mounted());
    f.mount();
    let files: Vec<String> = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|n| n == "CURRENT"), "{files:?}");
    assert!(files.iter().any(|n| n.ends_with(".sst")), "{files:?}");
    let read = ok(Command::new("db_bench")
        .args(&common)
        .args([
            "--use_existing_db=1",
            "--benchmarks=readseq,readrandom,verifychecksum",
        ])
        .output()
        .unwrap());
    // readseq walks every key: all 20000 written keys are there after the remount.
    let readseq = read
        .lines()
        .find(|l| l.starts_with("readseq"))
        .unwrap_or_else(|| panic!("no readseq line:\n{read}"));
    assert!(readseq.contains("20000 operations"), "{readseq}");
    let readrandom = read
        .lines()
        .find(|l| l.starts_with("readrandom"))
        .unwrap_or_else(|| panic!("no readrandom line:\n{read}"));
    assert!(
        readrandom.contains("(20000 of 20000 found)"),
        "{readrandom}"
    );
    assert!(read.contains("verifychecksum"), "{read}");
    f.umount();
    ok(oxblob().arg("fsck").arg(&f.img).output().unwrap());
}
