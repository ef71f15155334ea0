//! An image is opened by one device at a time: a second open gets `BdevError::InUse`, whatever
//! the backend, until the first device is dropped. `lock=0` turns the lock off.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test on setup errors"
)]

use oxblob_bdev::{spec, BdevError};

fn image(name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("oxblob-lock")
        .tempdir_in("/var/tmp")
        .unwrap();
    let path = dir.path().join(name).display().to_string();
    (dir, path)
}

#[test]
fn second_open_of_an_image_is_refused_until_the_first_is_dropped() {
    let (_dir, path) = image("a.img");
    let first = spec::open(&format!("file:{path}?create=8MiB")).unwrap();
    for second in [
        format!("file:{path}"),
        format!("psync:{path}"),
        format!("uring:{path}"),
        path.clone(),
    ] {
        match spec::open(&second) {
            Err(BdevError::InUse { path: p }) => assert_eq!(p, path),
            Err(e) => panic!("{second}: expected InUse, got {e}"),
            Ok(_) => panic!("{second}: opened an image that is in use"),
        }
    }
    let msg = spec::open(&path).err().unwrap().to_string();
    assert!(msg.contains("in use"), "{msg}");
    drop(first);
    let again = spec::open(&format!("psync:{path}")).unwrap();
    assert_eq!(again.info().size_bytes(), 8 << 20);
}

#[test]
fn lock_can_be_turned_off() {
    let (_dir, path) = image("b.img");
    let _first = spec::open(&format!("file:{path}?create=8MiB&lock=0")).unwrap();
    let _second = spec::open(&format!("psync:{path}?lock=0")).unwrap();
    match spec::open(&format!("psync:{path}?lock=maybe")) {
        Err(BdevError::Config(m)) => assert!(m.contains("lock"), "{m}"),
        other => panic!(
            "expected a config error, got {:?}",
            other.map(|d| d.info().clone())
        ),
    }
}
