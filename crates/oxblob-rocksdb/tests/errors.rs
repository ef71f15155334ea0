//! Bad input gives a clear RocksDB error status, never a crash: a wrong scheme or option, a
//! missing image, a corrupt image, an image in use by another process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use oxblob_rocksdb::{Code, Db, Options};
use std::io::Write;

fn open_err(uri: &str) -> oxblob_rocksdb::Error {
    Db::open(uri, "/db", &Options::default()).unwrap_err()
}

#[test]
fn wrong_scheme_is_not_supported() {
    let e = open_err("nosuch:///var/tmp/x.img");
    assert_eq!(e.code, Code::NotSupported, "{e}");
    assert!(e.message.contains("nosuch"), "{e}");
}

#[test]
fn bad_uri_options_are_invalid_arguments() {
    let dir = scratch();
    let img = dir.path().join("x.img");
    for (uri, needle) in [
        (format!("{}?bogus=1", uri(&img)), "unknown option \"bogus\""),
        (format!("{}?mkfs=perhaps", uri(&img)), "option mkfs"),
        (format!("{}?size=huge&mkfs=1", uri(&img)), "option size"),
        ("oxblob://relative/x.img".to_string(), "must be absolute"),
        ("oxblob://nvme:/dev/x".to_string(), "unknown device kind"),
        // Malformed oxblob URIs reach the plugin too, and fail with its reason.
        ("oxblob://".to_string(), "no device or image path"),
        ("oxblob://?mkfs=1".to_string(), "no device or image path"),
        (
            "oxblob:/var/tmp/x.img".to_string(),
            "must start with oxblob://",
        ),
        ("oxblob".to_string(), "must start with oxblob://"),
    ] {
        let e = open_err(&uri);
        assert_eq!(e.code, Code::InvalidArgument, "{uri}: {e}");
        assert!(e.message.contains(needle), "{uri}: {e}");
    }
    assert!(!img.exists(), "a rejected URI created the image");
}

#[test]
fn missing_image_is_an_error_naming_it() {
    let dir = scratch();
    let img = dir.path().join("missing.img");
    let e = open_err(&uri(&img));
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    assert!(e.message.contains("does not exist"), "{e}");
    assert!(e.message.contains(&img.display().to_string()), "{e}");
    assert!(!img.exists());
}

#[test]
fn corrupt_image_zeroed_superblocks_is_an_error() {
    let dir = scratch();
    let img = dir.path().join("db.img");
    let db = Db::open(&mkfs_uri(&img), "/db", &Options::default()).unwrap();
    db.put(b"k", b"v").unwrap();
    db.close().unwrap();
    // Zero both superblock slots (pages 0 and 1).
    let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all(&[0u8; 8192]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let e = open_err(&uri(&img));
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    assert!(e.message.contains("cannot mount"), "{e}");
    assert!(e.message.contains("not a blobstore"), "{e}");
    // Even with mkfs=1 an existing image is never reformatted.
    let e = open_err(&mkfs_uri(&img));
    assert!(e.message.contains("cannot mount"), "{e}");
}

#[test]
fn not_a_blobfs_file_is_an_error() {
    let dir = scratch();
    let img = dir.path().join("random.img");
    std::fs::write(&img, vec![0xA5u8; 1 << 20]).unwrap();
    let e = open_err(&uri(&img));
    assert!(e.message.contains("cannot mount"), "{e}");
}

/// Child: tries to open the DB on `OXBLOB_IMG` and reports on stdout.
#[test]
#[ignore = "child process of image_in_use_by_another_process"]
fn child_open_in_use() {
    let Ok(img) = std::env::var("OXBLOB_IMG") else {
        return;
    };
    match Db::open(&format!("oxblob://{img}"), "/db", &Options::default()) {
        Ok(_) => println!("RESULT opened"),
        Err(e) => println!("RESULT code={:?} msg={}", e.code, e.message),
    }
}

#[test]
fn image_in_use_by_another_process() {
    let dir = scratch();
    let img = dir.path().join("db.img");
    Db::open(&mkfs_uri(&img), "/db", &Options::default())
        .unwrap()
        .close()
        .unwrap();
    // Hold the image open (and flock'ed) in this process.
    let dev = oxblob_bdev::spec::open(&format!("file:{}", img.display())).unwrap();
    let out = child(
        "child_open_in_use",
        &[("OXBLOB_IMG", img.display().to_string())],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child crashed: {:?}\n{stdout}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("RESULT ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no result from child:\n{stdout}"));
    assert!(line.contains("code=InvalidArgument"), "{line}");
    assert!(line.contains("in use"), "{line}");
    drop(dev);
    // Released: the same child now opens it.
    let out = child(
        "child_open_in_use",
        &[("OXBLOB_IMG", img.display().to_string())],
    )
    .output()
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("RESULT opened"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
