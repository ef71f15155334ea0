//! Tests of device spec strings, SPDK JSON configs, the psync fallback and the O_DIRECT probe.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use oxblob_bdev::config::{open_from_config, parse_config, BdevConfig, BdevKind};
use oxblob_bdev::spec::{self, FileBackend, SpecOptions};
use oxblob_bdev::{blocking, parse_size, BdevError, DeviceSpec, FileOptions, IoBuf};
use std::path::{Path, PathBuf};

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("oxblob-spec-test")
        .tempdir_in("/var/tmp")
        .expect("tempdir")
}

fn config_msg(r: Result<impl std::fmt::Debug, BdevError>) -> String {
    match r {
        Err(BdevError::Config(m)) => m,
        other => panic!("expected a Config error, got {other:?}"),
    }
}

#[test]
fn sizes() {
    let cases: &[(&str, u64)] = &[
        ("0", 0),
        ("4096", 4096),
        ("512B", 512),
        ("512b", 512),
        ("4K", 4096),
        ("4k", 4096),
        ("4KiB", 4096),
        ("4KB", 4096),
        ("3M", 3 << 20),
        ("3m", 3 << 20),
        ("3MiB", 3 << 20),
        ("1G", 1 << 30),
        ("1g", 1 << 30),
        ("1GiB", 1 << 30),
        ("2T", 2 << 40),
        ("2TiB", 2 << 40),
        (" 7 GiB ", 7 << 30),
        ("16777215TiB", 16777215 << 40),
    ];
    for &(text, want) in cases {
        assert_eq!(parse_size(text), Ok(want), "{text}");
    }
    for bad in [
        "",
        "GiB",
        "-1",
        "1.5G",
        "1X",
        "1 GiBs",
        "16777216TiB",
        "99999999999999999999",
    ] {
        let m = config_msg(parse_size(bad));
        assert!(m.contains("invalid size"), "{bad}: {m}");
    }
    assert_eq!(spec::format_size(1 << 30), "1GiB");
    assert_eq!(spec::format_size(3 << 20), "3MiB");
    assert_eq!(spec::format_size(4097), "4097");
    assert_eq!(spec::format_size(0), "0");
}

#[test]
fn spec_forms_parse_and_round_trip() {
    let s: DeviceSpec = "malloc:1GiB".parse().unwrap();
    assert_eq!(
        s,
        DeviceSpec::Malloc {
            size: 1 << 30,
            options: SpecOptions::default()
        }
    );
    let s: DeviceSpec = "file:/x.img?direct=0&bs=512&create=4GiB&name=Foo&qd=512&sqpoll=1"
        .parse()
        .unwrap();
    assert_eq!(
        s,
        DeviceSpec::File {
            backend: FileBackend::Auto,
            path: PathBuf::from("/x.img"),
            options: SpecOptions {
                block_size: Some(512),
                name: Some("Foo".into()),
                direct: Some(false),
                create_size: Some(4 << 30),
                queue_depth: Some(512),
                sqpoll: Some(true),
                lock: None,
            }
        }
    );
    let cases = [
        ("uring:/dev/loop0", FileBackend::Uring, "/dev/loop0"),
        ("psync:/p/d.img", FileBackend::Psync, "/p/d.img"),
        ("/bare/path.img", FileBackend::Auto, "/bare/path.img"),
        ("relative.img", FileBackend::Auto, "relative.img"),
        ("./dir:with/colon", FileBackend::Auto, "./dir:with/colon"),
        ("file:rel/x", FileBackend::Auto, "rel/x"),
    ];
    for (text, backend, path) in cases {
        match text.parse::<DeviceSpec>().unwrap() {
            DeviceSpec::File {
                backend: b,
                path: p,
                options,
            } => {
                assert_eq!(b, backend, "{text}");
                assert_eq!(p, PathBuf::from(path), "{text}");
                assert_eq!(options, SpecOptions::default());
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    for text in [
        "malloc:1GiB",
        "malloc:4097?bs=512&name=M0",
        "file:/x.img?bs=512&direct=0&create=4GiB&qd=256&sqpoll=0&name=Foo",
        "uring:/dev/loop0",
        "psync:/a/b?direct=1",
    ] {
        let s: DeviceSpec = text.parse().unwrap();
        assert_eq!(s.to_string(), text);
        assert_eq!(s.to_string().parse::<DeviceSpec>().unwrap(), s);
    }
    // A bare path prints as file: and still means the same device.
    let s: DeviceSpec = "/bare.img".parse().unwrap();
    assert_eq!(s.to_string(), "file:/bare.img");
}

#[test]
fn spec_errors_are_config_errors_with_clear_messages() {
    let cases = [
        (
            "foo:/x",
            "unknown device kind 'foo' in 'foo:/x' (expected malloc, file, uring, psync)",
        ),
        ("", "empty device spec"),
        ("malloc:", "missing size in 'malloc:'"),
        ("malloc:lots", "invalid size 'lots'"),
        ("malloc:1G?direct=0", "does not apply to malloc"),
        ("malloc:1G?bs=3000", "block size '3000'"),
        ("file:", "missing path in 'file:'"),
        ("uring:", "missing path"),
        (
            "file:/x?colour=red",
            "unknown option 'colour' in 'file:/x?colour=red'",
        ),
        ("file:/x?direct", "has no value"),
        (
            "file:/x?direct=maybe",
            "invalid value 'maybe' for option 'direct'",
        ),
        ("file:/x?bs=4K&bs=512", "given twice"),
        ("file:/x?qd=8", "queue depth '8'"),
        ("file:/x?create=big", "invalid size 'big'"),
        ("file:/x?name=", "empty name"),
    ];
    for (text, want) in cases {
        let m = config_msg(text.parse::<DeviceSpec>());
        assert!(m.contains(want), "{text:?}: message {m:?} lacks {want:?}");
        // open() reports the same error.
        assert_eq!(config_msg(spec::open(text).map(|_| ())), m);
    }
    // malloc size not a multiple of the block size is caught at open.
    let m = config_msg(spec::open("malloc:6000").map(|_| ()));
    assert!(m.contains("not a multiple"), "{m}");
}

#[test]
fn open_every_kind_and_do_io() {
    let dir = tmpdir();
    let m = spec::open("malloc:4MiB?bs=512&name=M0").unwrap();
    assert_eq!(m.info().backend, "malloc");
    assert_eq!(m.info().name, "M0");
    assert_eq!(m.info().block_size, 512);
    assert_eq!(m.info().num_blocks, 8192);
    for (kind, backend) in [("file", "uring"), ("uring", "uring"), ("psync", "psync")] {
        let path = dir.path().join(format!("{kind}.img"));
        let dev = spec::open(&format!("{kind}:{}?create=2MiB&name=D", path.display())).unwrap();
        assert_eq!(dev.info().backend, backend, "{kind}");
        assert_eq!(dev.info().name, "D");
        assert_eq!(dev.info().size_bytes(), 2 << 20);
        let mut ch = dev.channel().unwrap();
        blocking::write_slice(ch.as_mut(), 8192, &[0x5Au8; 4096]).unwrap();
        blocking::flush(ch.as_mut()).unwrap();
        assert_eq!(
            blocking::read(ch.as_mut(), 8192, 4096).unwrap().to_vec(),
            vec![0x5Au8; 4096]
        );
    }
    // A bare path opens the file backend.
    let bare = dir.path().join("file.img");
    let dev = spec::open(bare.to_str().unwrap()).unwrap();
    assert_eq!(dev.info().backend, "uring");
    assert_eq!(dev.info().name, bare.display().to_string());

    // open_with: the caller's create_size applies; spec options override the caller's.
    let p = dir.path().join("mkfs.img");
    let opts = FileOptions {
        create_size: Some(3 << 20),
        block_size: Some(4096),
        ..FileOptions::default()
    };
    let dev = spec::open_with(&format!("file:{}?bs=512", p.display()), &opts).unwrap();
    assert_eq!(dev.info().block_size, 512);
    assert_eq!(dev.info().size_bytes(), 3 << 20);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 3 << 20);
}

#[test]
fn missing_file_is_an_open_error_naming_path_and_reason() {
    let dir = tmpdir();
    let p = dir.path().join("absent.img");
    for kind in ["file", "uring", "psync"] {
        match spec::open(&format!("{kind}:{}", p.display())) {
            Err(BdevError::Open { path, message }) => {
                assert_eq!(path, p.display().to_string());
                assert!(message.contains("No such file or directory"), "{message}");
                let shown = BdevError::Open {
                    path: path.clone(),
                    message,
                }
                .to_string();
                assert!(shown.contains(&path));
            }
            other => panic!("{kind}: {:?}", other.map(|d| d.info().clone())),
        }
    }
}

#[test]
fn force_psync_option_selects_psync_for_file_specs() {
    let dir = tmpdir();
    let p = dir.path().join("forced.img");
    let opts = FileOptions {
        force_psync: true,
        create_size: Some(1 << 20),
        ..FileOptions::default()
    };
    let dev = spec::open_with(&format!("file:{}", p.display()), &opts).unwrap();
    assert_eq!(dev.info().backend, "psync");
    drop(dev);
    // uring: is explicit and ignores force_psync.
    let dev = spec::open_with(&format!("uring:{}", p.display()), &opts).unwrap();
    assert_eq!(dev.info().backend, "uring");
}

/// Runs in a child process with `OXBLOB_NO_URING=1` (see `no_uring_env_falls_back_to_psync`);
/// ignored when run directly.
#[test]
#[ignore = "run by no_uring_env_falls_back_to_psync in a child process"]
fn child_with_no_uring_env() {
    assert!(
        std::env::var_os("OXBLOB_NO_URING").is_some(),
        "run me in the child only"
    );
    let p = PathBuf::from(std::env::var("OXBLOB_TEST_PATH").unwrap());
    let dev2 = spec::open(&format!("{}", p.display())).unwrap();
    assert_eq!(dev2.info().backend, "psync");
    drop(dev2);
    // Second open: the notice is printed only once.
    let dev = spec::open(&format!("file:{}", p.display())).unwrap();
    assert_eq!(dev.info().backend, "psync");
    let mut ch = dev.channel().unwrap();
    blocking::write_slice(ch.as_mut(), 0, &[9u8; 4096]).unwrap();
    assert_eq!(
        blocking::read(ch.as_mut(), 0, 4096).unwrap().to_vec(),
        vec![9u8; 4096]
    );
    drop(ch);
    drop(dev);
    match spec::open(&format!("uring:{}", p.display())) {
        Err(BdevError::Open { message, .. }) => {
            assert!(message.contains("io_uring unavailable"), "{message}")
        }
        other => panic!("uring: must fail without io_uring: {:?}", other.map(|_| ())),
    }
    println!("CHILD-OK");
}

#[test]
fn no_uring_env_falls_back_to_psync() {
    let dir = tmpdir();
    let p = dir.path().join("child.img");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_with_no_uring_env",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OXBLOB_NO_URING", "1")
        .env("OXBLOB_TEST_PATH", &p)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed:\n{stdout}\n{stderr}"
    );
    let notice = "oxblob: io_uring unavailable (OXBLOB_NO_URING is set); using pread/pwrite";
    assert_eq!(stderr.matches(notice).count(), 1, "stderr:\n{stderr}");
}

/// What the kernel says about `O_DIRECT` on `path`, checked independently of the backend.
fn kernel_accepts_direct(path: &Path) -> bool {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => {
            let mut b = IoBuf::zeroed(4096);
            f.read_at(&mut b, 0).is_ok()
        }
        Err(_) => false,
    }
}

#[test]
fn direct_io_on_ext4_and_tmpfs_matches_the_kernel() {
    let dir = tmpdir();
    let p = dir.path().join("d.img");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    assert!(kernel_accepts_direct(&p), "/var/tmp must accept O_DIRECT");
    for kind in ["uring", "psync"] {
        let dev = spec::open(&format!("{kind}:{}", p.display())).unwrap();
        assert!(dev.info().caps.direct_io, "{kind} on ext4");
        drop(dev);
        let dev = spec::open(&format!("{kind}:{}?direct=0", p.display())).unwrap();
        assert!(!dev.info().caps.direct_io, "{kind} direct=0");
    }
    // tmpfs accepts O_DIRECT since Linux 6.6 and refused it before; either way the backend must
    // agree with the kernel and still do correct I/O.
    let Ok(shm) = tempfile::Builder::new()
        .prefix("oxblob-spec-test")
        .tempdir_in("/dev/shm")
    else {
        println!("skipped tmpfs part: no /dev/shm");
        return;
    };
    let p = shm.path().join("d.img");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let kernel = kernel_accepts_direct(&p);
    for kind in ["uring", "psync"] {
        let dev = spec::open(&format!("{kind}:{}", p.display())).unwrap();
        assert_eq!(dev.info().caps.direct_io, kernel, "{kind} on tmpfs");
        let mut ch = dev.channel().unwrap();
        blocking::write_slice(ch.as_mut(), 4096, &[3u8; 4096]).unwrap();
        assert_eq!(
            blocking::read(ch.as_mut(), 4096, 4096).unwrap().to_vec(),
            vec![3u8; 4096]
        );
    }
}

/// Unmounts and removes a ramfs mount point when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn direct_refused_on_ramfs_falls_back_to_buffered() {
    // ramfs has no O_DIRECT at all: open(O_DIRECT) fails with EINVAL.
    let dir = tmpdir();
    let mnt = dir.path().join("ramfs");
    std::fs::create_dir(&mnt).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "ramfs", "oxblob-test"])
        .arg(&mnt)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        println!("skipped: cannot mount ramfs here ({status:?})");
        return;
    }
    let guard = Mount(mnt.clone());
    let p = mnt.join("r.img");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    assert!(!kernel_accepts_direct(&p));
    for kind in ["file", "uring", "psync"] {
        let dev = spec::open(&format!("{kind}:{}", p.display())).unwrap();
        assert!(!dev.info().caps.direct_io, "{kind}");
        assert_eq!(dev.info().caps.buf_align, 1);
        let mut ch = dev.channel().unwrap();
        blocking::write_slice(ch.as_mut(), 0, &[0xC3u8; 8192]).unwrap();
        blocking::write_zeroes(ch.as_mut(), 4096, 4096).unwrap();
        let got = blocking::read(ch.as_mut(), 0, 8192).unwrap();
        assert_eq!(&got[..4096], &[0xC3u8; 4096][..]);
        assert_eq!(&got[4096..], &[0u8; 4096][..]);
    }
    drop(guard);
}

const SAMPLE: &str = r#"{
  "subsystems": [
    {"subsystem": "accel", "config": [{"method": "accel_set_options", "params": {}}]},
    {"subsystem": "bdev", "config": [
      {"method": "bdev_set_options", "params": {"bdev_io_pool_size": 65535}},
      {"method": "bdev_nvme_set_options", "params": {"action_on_timeout": "none"}},
      {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 2048, "block_size": 4096}},
      {"method": "bdev_aio_create", "params": {"name": "AIO0", "filename": "AIOFILE", "block_size": 512}},
      {"method": "bdev_uring_create", "params": {"name": "Uring0", "filename": "URINGFILE", "uuid": "x"}},
      {"method": "bdev_wait_for_examine"}
    ]}
  ]
}"#;

#[test]
fn config_parses_spdk_format() {
    let bdevs = parse_config(SAMPLE).unwrap();
    assert_eq!(
        bdevs,
        vec![
            BdevConfig {
                name: "Malloc0".into(),
                kind: BdevKind::Malloc {
                    num_blocks: 2048,
                    block_size: 4096
                }
            },
            BdevConfig {
                name: "AIO0".into(),
                kind: BdevKind::Aio {
                    filename: "AIOFILE".into(),
                    block_size: Some(512)
                }
            },
            BdevConfig {
                name: "Uring0".into(),
                kind: BdevKind::Uring {
                    filename: "URINGFILE".into(),
                    block_size: None
                }
            },
        ]
    );
    assert_eq!(
        parse_config(r#"{"subsystems":[{"subsystem":"bdev","config":[]}]}"#).unwrap(),
        vec![]
    );
    assert_eq!(
        parse_config(r#"{"subsystems":[{"subsystem":"bdev"}]}"#).unwrap(),
        vec![]
    );
}

#[test]
fn config_opens_named_bdevs() {
    let dir = tmpdir();
    let aio = dir.path().join("aio.img");
    let uring = dir.path().join("uring.img");
    std::fs::write(&aio, vec![0u8; 1 << 20]).unwrap();
    std::fs::write(&uring, vec![0u8; 2 << 20]).unwrap();
    let text = SAMPLE
        .replace("AIOFILE", aio.to_str().unwrap())
        .replace("URINGFILE", uring.to_str().unwrap());
    let cfg = dir.path().join("bdev.json");
    std::fs::write(&cfg, text).unwrap();

    let m = open_from_config(&cfg, "Malloc0").unwrap();
    assert_eq!(m.info().name, "Malloc0");
    assert_eq!(m.info().backend, "malloc");
    assert_eq!(m.info().size_bytes(), 2048 * 4096);
    let a = open_from_config(&cfg, "AIO0").unwrap();
    assert_eq!(a.info().name, "AIO0");
    assert_eq!(a.info().backend, "uring");
    assert_eq!(a.info().block_size, 512);
    assert_eq!(a.info().num_blocks, 2048);
    let u = open_from_config(&cfg, "Uring0").unwrap();
    assert_eq!(u.info().name, "Uring0");
    assert_eq!(u.info().backend, "uring");
    assert_eq!(u.info().block_size, 4096);
    assert_eq!(u.info().num_blocks, 512);
    let mut ch = u.channel().unwrap();
    blocking::write_slice(ch.as_mut(), 4096, &[1u8; 4096]).unwrap();
    drop(ch);
    drop(u);
    assert_eq!(
        &std::fs::read(&uring).unwrap()[4096..8192],
        &[1u8; 4096][..]
    );

    let m = config_msg(open_from_config(&cfg, "Nvme0n1").map(|_| ()));
    assert!(m.contains("no bdev named 'Nvme0n1'"), "{m}");
    assert!(m.contains("Malloc0, AIO0, Uring0"), "{m}");
    assert!(m.contains(&cfg.display().to_string()), "{m}");

    match open_from_config(&dir.path().join("none.json"), "Malloc0") {
        Err(BdevError::Open { path, message }) => {
            assert!(path.ends_with("none.json"));
            assert!(message.contains("No such file"), "{message}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // A bdev whose file is missing reports an Open error for that file.
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_aio_create","params":{"name":"A","filename":"/nonexistent/x.img"}}]}]}"#,
    )
    .unwrap();
    match open_from_config(&broken, "A") {
        Err(BdevError::Open { path, .. }) => assert_eq!(path, "/nonexistent/x.img"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn config_errors() {
    let wrap =
        |calls: &str| format!(r#"{{"subsystems":[{{"subsystem":"bdev","config":[{calls}]}}]}}"#);
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "is not valid JSON"),
        ("{}".into(), "has no \"subsystems\" array"),
        (r#"{"subsystems":{}}"#.into(), "has no \"subsystems\" array"),
        (
            r#"{"subsystems":[{"subsystem":"bdev","config":{}}]}"#.into(),
            "\"config\" must be an array",
        ),
        (wrap(r#"{"params":{}}"#), "has no \"method\""),
        (
            wrap(r#"{"method":"bdev_nvme_attach_controller","params":{"name":"Nvme0"}}"#),
            "unsupported bdev method 'bdev_nvme_attach_controller' in config (inline)",
        ),
        (
            wrap(r#"{"method":"bdev_malloc_create","params":{"name":"M","block_size":4096}}"#),
            "bdev_malloc_create in config (inline) is missing parameter 'num_blocks'",
        ),
        (
            wrap(r#"{"method":"bdev_malloc_create","params":{"name":"M","num_blocks":8}}"#),
            "missing parameter 'block_size'",
        ),
        (
            wrap(r#"{"method":"bdev_malloc_create","params":{"num_blocks":8,"block_size":512}}"#),
            "missing parameter 'name'",
        ),
        (
            wrap(
                r#"{"method":"bdev_malloc_create","params":{"name":"M","num_blocks":-1,"block_size":512}}"#,
            ),
            "parameter 'num_blocks' must be a non-negative integer",
        ),
        (
            wrap(
                r#"{"method":"bdev_malloc_create","params":{"name":"M","num_blocks":0,"block_size":512}}"#,
            ),
            "parameter 'num_blocks' must be at least 1",
        ),
        (
            wrap(
                r#"{"method":"bdev_malloc_create","params":{"name":"M","num_blocks":8,"block_size":1000}}"#,
            ),
            "parameter 'block_size' must be a power of two",
        ),
        (
            wrap(r#"{"method":"bdev_aio_create","params":{"name":"A"}}"#),
            "bdev_aio_create in config (inline) is missing parameter 'filename'",
        ),
        (
            wrap(r#"{"method":"bdev_uring_create","params":{"name":5,"filename":"/x"}}"#),
            "parameter 'name' must be a non-empty string",
        ),
        (
            wrap(r#"{"method":"bdev_uring_create","params":"x"}"#),
            "\"params\" must be an object",
        ),
        (
            wrap(
                r#"{"method":"bdev_malloc_create","params":{"name":"D","num_blocks":8,"block_size":512}},
                   {"method":"bdev_aio_create","params":{"name":"D","filename":"/x"}}"#,
            ),
            "bdev name 'D' is defined twice",
        ),
    ];
    for (text, want) in cases {
        let m = config_msg(parse_config(&text));
        assert!(
            m.contains(want),
            "{text}\n  message {m:?}\n  lacks {want:?}"
        );
    }
    // The path of a config file is named in the message.
    let dir = tmpdir();
    let p = dir.path().join("nvme.json");
    std::fs::write(
        &p,
        wrap(r#"{"method":"bdev_nvme_attach_controller","params":{"name":"Nvme0"}}"#),
    )
    .unwrap();
    let m = config_msg(open_from_config(&p, "Nvme0n1").map(|_| ()));
    assert_eq!(
        m,
        format!(
            "unsupported bdev method 'bdev_nvme_attach_controller' in config {}",
            p.display()
        )
    );
}
