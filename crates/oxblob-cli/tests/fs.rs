//! End-to-end tests of the file-system commands: the real `oxblob` binary on image files under
//! /var/tmp. Data is compared byte for byte; errors by message and exit code.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::*;

use oxblob_blobstore::{bstype, BlobStore, LoadOptions};

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("oxblob-fs-test")
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// A formatted 128 MiB image with 64 KiB clusters.
fn image(dir: &Path) -> String {
    let s = dir.join("disk.img").to_str().unwrap().to_string();
    ok(&["mkfs", &s, "--size", "128M", "--cluster-size", "64k"]);
    s
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn fsck_clean(img: &str) {
    let v = json(&ok(&["fsck", img, "--json"]));
    assert_eq!(v["clean"], true, "{v}");
    assert_eq!(v["namespace_checked"], true, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
}

/// Every file under `dir` (relative path -> bytes), directories as `None`.
fn host_tree(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, Option<Vec<u8>>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            let rel = e.strip_prefix(base).unwrap().to_str().unwrap().to_string();
            if e.is_dir() {
                out.push((rel, None));
                walk(base, &e, out);
            } else {
                out.push((rel, Some(std::fs::read(&e).unwrap())));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

#[test]
fn every_command_has_help() {
    for cmd in [
        "mkfs", "fsck", "ls", "tree", "mkdir", "cp", "cat", "rm", "mv", "stat", "df", "shell",
    ] {
        let out = ok(&[cmd, "--help"]);
        assert!(
            out.contains(&format!("Usage: oxblob {cmd}")),
            "{cmd}: {out}"
        );
    }
    assert!(ok(&["cp", "--help"]).contains("oxblob cp disk.img notes.txt :/docs/"));
    assert!(ok(&["shell", "--help"]).contains("put [-r] HOST [PATH]"));
    assert!(ok(&["--help"]).contains("mkfs"));
}

/// `--preallocate` writes the whole image: no sparse hole is left on the host.
#[test]
fn mkfs_preallocate_allocates_every_block() {
    use std::os::unix::fs::MetadataExt;
    let d = tmp();
    let sparse = d.path().join("sparse.img");
    let full = d.path().join("full.img");
    ok(&["mkfs", p(&sparse), "--size", "32M"]);
    ok(&["mkfs", p(&full), "--size", "32M", "--preallocate"]);
    let blocks = |f: &std::path::Path| std::fs::metadata(f).unwrap().blocks() * 512;
    assert!(blocks(&sparse) < 16 << 20, "mkfs alone writes little");
    assert!(
        blocks(&full) >= 32 << 20,
        "{} bytes allocated",
        blocks(&full)
    );
    ok(&["mkdir", p(&full), "/a"]);
    assert_eq!(ok(&["ls", p(&full)]), "a\n");
    fsck_clean(p(&full));
}

#[test]
fn mkfs_prints_summary_and_refuses_to_overwrite() {
    let d = tmp();
    let img = d.path().join("disk.img");
    let s = p(&img);
    let out = ok(&["mkfs", s, "--size", "64M", "--cluster-size", "64k"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("Initializing filesystem on bdev {s}...done.")
    );
    assert_eq!(lines[1], "  size:         64MiB (67108864 bytes)");
    assert_eq!(lines[2], "  cluster size: 64KiB");
    assert!(lines[3].starts_with("  data:         "), "{out}");
    assert!(lines[4].starts_with("  free:         "), "{out}");
    assert!(lines[5].ends_with("(1/8 of the device)"), "{out}");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 20);

    let err = fails(&["mkfs", s]);
    assert_eq!(
        err,
        format!("oxblob: mkfs {s}: the device already holds an oxblob file system; use --force to overwrite it")
    );
    // Data survives the refused mkfs; --force wipes it.
    ok(&["mkdir", s, "/keep"]);
    fails(&["mkfs", s, "--size", "64M"]);
    assert_eq!(ok(&["ls", s]), "keep\n");
    let v = json(&ok(&["mkfs", s, "--force", "--json"]));
    assert_eq!(v["cluster_size"], 1 << 20);
    assert_eq!(v["size_bytes"], 64 << 20);
    assert_eq!(v["free_bytes"], v["data_bytes"]);
    assert_eq!(ok(&["ls", s]), "");
    fsck_clean(s);

    // A blobstore of another type is refused by name, and is not a file system.
    let other = d.path().join("bs.img");
    ok(&[
        "bs",
        "init",
        p(&other),
        "--size",
        "16M",
        "--cluster-size",
        "64k",
    ]);
    let err = fails(&["mkfs", p(&other)]);
    assert!(
        err.ends_with(
            "the device already holds an oxblob blobstore (type ''); use --force to overwrite it"
        ),
        "{err}"
    );
    let err = fails(&["ls", p(&other)]);
    assert!(
        err.contains(&format!(
            "cannot mount {}: not an oxblob file system",
            p(&other)
        )),
        "{err}"
    );
    // A file of zeroes is not one either.
    let zero = d.path().join("zero.img");
    std::fs::write(&zero, vec![0u8; 1 << 20]).unwrap();
    let err = fails(&["ls", p(&zero)]);
    assert!(
        err.ends_with("not an oxblob file system (no superblock; run 'oxblob mkfs' first)"),
        "{err}"
    );
    // Usage errors.
    let err = fails(&["mkfs"]);
    assert!(err.contains("IMAGE is required"), "{err}");
    let err = fails(&["mkfs", p(&d.path().join("missing.img"))]);
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn copy_round_trips_byte_for_byte() {
    let d = tmp();
    let img = image(d.path());
    let s = img.as_str();
    let host = d.path().join("host");
    std::fs::create_dir(&host).unwrap();
    // A 20 MiB file, streamed in chunks.
    let big = pattern(20 << 20, 7);
    std::fs::write(host.join("big.bin"), &big).unwrap();
    std::fs::write(host.join("notes.txt"), b"hello, blobfs\n").unwrap();

    ok(&["mkdir", s, "-p", "/docs/deep/er"]);
    ok(&["cp", s, p(&host.join("notes.txt")), ":/docs/"]);
    ok(&["cp", s, p(&host.join("big.bin")), ":/docs/deep/big"]);
    assert_eq!(ok(&["cat", s, "/docs/notes.txt"]), "hello, blobfs\n");
    let st = json(&ok(&["stat", s, "/docs/deep/big", "--json"]));
    assert_eq!(st["size"], 20 << 20);
    assert_eq!(st["type"], "file");
    assert_eq!(st["allocated_bytes"], 20 << 20);
    assert_eq!(st["path"], "/docs/deep/big");
    assert!(st["ino"].as_u64().unwrap() > 1);
    assert!(st["mtime_ns"].as_u64().unwrap() > 1_700_000_000_000_000_000);

    // Image -> host, and image -> image (into a directory, then to a new name).
    let out = d.path().join("out.bin");
    ok(&["cp", s, ":/docs/deep/big", p(&out)]);
    assert!(
        std::fs::read(&out).unwrap() == big,
        "20 MiB round trip differs"
    );
    ok(&["cp", s, ":/docs/deep/big", ":/docs/deep/er"]);
    ok(&["cp", s, ":/docs/notes.txt", ":/copy.txt"]);
    ok(&["cp", s, ":/docs/deep/er/big", p(&out)]);
    assert!(
        std::fs::read(&out).unwrap() == big,
        "image->image copy differs"
    );
    assert_eq!(
        ok(&["cat", s, "/copy.txt", "/docs/notes.txt"]),
        "hello, blobfs\n".repeat(2)
    );
    // Several sources into a directory; overwrite of an existing file.
    std::fs::write(host.join("notes.txt"), b"v2").unwrap();
    ok(&[
        "cp",
        s,
        p(&host.join("notes.txt")),
        ":/copy.txt",
        ":/docs/deep",
    ]);
    assert_eq!(
        ok(&["cat", s, "/docs/deep/notes.txt", "/docs/deep/copy.txt"]),
        "v2hello, blobfs\n"
    );
    ok(&["cp", s, p(&host.join("notes.txt")), ":/copy.txt"]);
    assert_eq!(ok(&["cat", s, "/copy.txt"]), "v2");

    // A directory tree with -r, both ways: empty files, the inline limit, empty dirs.
    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
    std::fs::create_dir_all(tree.join("empty")).unwrap();
    std::fs::write(tree.join("zero"), b"").unwrap();
    std::fs::write(tree.join("a/inline"), pattern(2048, 1)).unwrap();
    std::fs::write(tree.join("a/over"), pattern(2049, 2)).unwrap();
    std::fs::write(tree.join("a/b/c/mid"), pattern(300_000, 3)).unwrap();
    ok(&["cp", s, "-r", p(&tree), ":/"]);
    let back = d.path().join("back");
    ok(&["cp", s, "-r", ":/tree", p(&back)]);
    assert_eq!(host_tree(&back), host_tree(&tree));
    // Image -> image, recursively; then out again.
    ok(&["cp", s, "-r", ":/tree", ":/tree2"]);
    let back2 = d.path().join("back2");
    ok(&["cp", s, "-r", ":/tree2", p(&back2)]);
    assert_eq!(host_tree(&back2), host_tree(&tree));

    let df = json(&ok(&["df", s, "--json"]));
    let (total, used, free) = (
        df["total_bytes"].as_u64().unwrap(),
        df["used_bytes"].as_u64().unwrap(),
        df["free_bytes"].as_u64().unwrap(),
    );
    assert_eq!(used + free, total);
    assert!(used >= 40 << 20, "two 20 MiB files: {df}");
    // Directories /, docs, deep, er; files docs/notes.txt, deep/{big,notes.txt,copy.txt},
    // er/big, copy.txt; tree and tree2 with 5 directories and 4 files each.
    assert_eq!(df["files"], 4 + 6 + 2 * 9, "{df}");
    assert_eq!(df["cluster_size"], 65536);
    fsck_clean(s);
}

#[test]
fn listings() {
    let d = tmp();
    let img = image(d.path());
    let s = img.as_str();
    ok(&["mkdir", s, "-p", "/docs/sub", "/empty"]);
    let f = d.path().join("f");
    std::fs::write(&f, b"12345").unwrap();
    ok(&["cp", s, p(&f), ":/docs/a.txt"]);
    ok(&["cp", s, p(&f), ":/docs/sub/b.txt"]);
    assert_eq!(ok(&["ls", s]), "docs\nempty\n");
    assert_eq!(ok(&["ls", s, "/docs"]), "a.txt\nsub\n");
    assert_eq!(ok(&["ls", s, "/docs/a.txt"]), "/docs/a.txt\n");
    assert_eq!(
        ok(&["ls", s, "-R"]),
        "/:\ndocs\nempty\n\n/docs:\na.txt\nsub\n\n/docs/sub:\nb.txt\n\n/empty:\n"
    );
    let long = ok(&["ls", s, "-l", "/docs"]);
    let rows: Vec<Vec<&str>> = long
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{long}");
    assert_eq!(
        (rows[0][0], rows[0][1], rows[0][5]),
        ("-", "5", "a.txt"),
        "{long}"
    );
    assert_eq!(
        (rows[1][0], rows[1][1], rows[1][5]),
        ("d", "0", "sub"),
        "{long}"
    );
    // mtime as a date and time, inode a number matching stat.
    assert_eq!(rows[0][2].len(), 10, "{long}");
    assert_eq!(rows[0][3].len(), 8, "{long}");
    let st = json(&ok(&["stat", s, "/docs/a.txt", "--json"]));
    assert_eq!(
        rows[0][4].parse::<u64>().unwrap(),
        st["ino"].as_u64().unwrap()
    );
    assert_eq!(
        ok(&["tree", s]),
        "/\n├── docs\n│   ├── a.txt\n│   └── sub\n│       └── b.txt\n└── empty\n\n3 directories, 2 files\n"
    );
    assert_eq!(
        ok(&["tree", s, "/docs/sub"]),
        "/docs/sub\n└── b.txt\n\n0 directories, 1 file\n"
    );
    let text = ok(&["stat", s, "/docs"]);
    assert!(text.contains("  Type: directory"), "{text}");
    let text = ok(&["df", s]);
    assert!(text.starts_with("Filesystem"), "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with(s), "{text}");
}

#[test]
fn rm_and_mv() {
    let d = tmp();
    let img = image(d.path());
    let s = img.as_str();
    let f = d.path().join("f");
    std::fs::write(&f, pattern(5000, 9)).unwrap();
    ok(&["mkdir", s, "-p", "/a/b/c", "/x"]);
    ok(&["cp", s, p(&f), ":/a/b/c/file"]);
    ok(&["cp", s, p(&f), ":/a/top"]);
    // mv a file to a new name, a directory into an existing directory, and back.
    ok(&["mv", s, "/a/top", "/a/renamed"]);
    ok(&["mv", s, "/a/b", "/x"]);
    assert_eq!(
        ok(&["ls", s, "-R", "/x"]),
        "/x:\nb\n\n/x/b:\nc\n\n/x/b/c:\nfile\n"
    );
    let out = d.path().join("o");
    ok(&["cp", s, ":/x/b/c/file", p(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), pattern(5000, 9));
    ok(&["mv", s, "/x/b", "/moved"]);
    assert_eq!(ok(&["ls", s]), "a\nmoved\nx\n");
    // rm: a file, an empty directory, a tree with -r.
    ok(&["rm", s, "/a/renamed"]);
    ok(&["rm", s, "/x"]);
    assert_eq!(ok(&["ls", s]), "a\nmoved\n");
    let err = fails(&["rm", s, "/moved"]);
    assert_eq!(err, "oxblob: cannot remove '/moved': Directory not empty");
    ok(&["rm", s, "-r", "/moved", "/a"]);
    assert_eq!(ok(&["ls", s]), "");
    let df = json(&ok(&["df", s, "--json"]));
    assert_eq!(df["files"], 1);
    assert_eq!(df["used_bytes"], 0);
    fsck_clean(s);
}

#[test]
fn errors_say_what_and_where() {
    let d = tmp();
    let img = image(d.path());
    let s = img.as_str();
    ok(&["mkdir", s, "/a"]);
    let f = d.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    ok(&["cp", s, p(&f), ":/a/f"]);
    let o = d.path().join("o");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["stat", s, "/nope"],
            "cannot stat '/nope': No such file or directory".into(),
        ),
        (
            vec!["ls", s, "/nope"],
            "cannot access '/nope': No such file or directory".into(),
        ),
        (
            vec!["cat", s, "/nope"],
            "cannot open '/nope': No such file or directory".into(),
        ),
        (
            vec!["cat", s, "/a"],
            "cannot open '/a': Is a directory".into(),
        ),
        (
            vec!["rm", s, "/a"],
            "cannot remove '/a': Directory not empty".into(),
        ),
        (
            vec!["rm", s, "/nope"],
            "cannot remove '/nope': No such file or directory".into(),
        ),
        (
            vec!["mkdir", s, "/a"],
            "cannot create directory '/a': File exists".into(),
        ),
        (
            vec!["mkdir", s, "/nope/b"],
            "cannot create directory '/nope/b': No such file or directory".into(),
        ),
        (
            vec!["mkdir", s, "/a/f/g"],
            "cannot create directory '/a/f/g': Not a directory".into(),
        ),
        (
            vec!["mv", s, "/nope", "/b"],
            "cannot move '/nope' to '/b': No such file or directory".into(),
        ),
        (
            vec!["cp", s, p(&f), ":/missing/x"],
            "cannot create ':/missing/x': No such file or directory".into(),
        ),
        (
            vec!["cp", s, p(&f), ":/missing/"],
            "cannot copy to ':/missing/': No such file or directory".into(),
        ),
        (
            vec!["cp", s, ":/a", p(&o)],
            "cannot copy ':/a': Is a directory (-r not specified; omitting directory)".into(),
        ),
        (
            vec!["cp", s, ":/nope", "/tmp/x"],
            "cannot stat ':/nope': No such file or directory".into(),
        ),
        (
            vec!["cp", s, "/definitely/not/here", ":/"],
            "cannot stat '/definitely/not/here': No such file or directory".into(),
        ),
        (
            vec!["cp", s, p(&f), p(&f)],
            "cp: at least one of SRC and DST must be inside the image (start it with ':')".into(),
        ),
        (
            vec!["rm", s, "-r", "/"],
            "cannot remove '/': Invalid argument (refusing to remove the root directory)".into(),
        ),
    ];
    for (args, want) in &cases {
        assert_eq!(fails(args), format!("oxblob: {want}"), "{args:?}");
    }
    // A FIFO would block a reader forever: it is refused, like other special files.
    let fifo = d.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    assert_eq!(
        fails(&["cp", s, p(&fifo), ":/fifo"]),
        format!(
            "oxblob: cannot copy '{}': not a regular file or directory",
            p(&fifo)
        )
    );
    let long = format!("/{}", "n".repeat(256));
    let err = fails(&["mkdir", s, &long]);
    assert!(
        err.starts_with(&format!(
            "oxblob: cannot create directory '{long}': File name too long"
        )),
        "{err}"
    );
    let err = fails(&["mv", s, "/a", "/a/sub"]);
    assert!(
        err.starts_with("oxblob: cannot move '/a' to '/a/sub': Invalid argument"),
        "{err}"
    );
    // Usage errors name the command.
    assert!(fails(&["mv", s, "/a"]).starts_with("oxblob: usage: mv IMAGE SRC DST"));
    assert!(fails(&["stat", s]).contains("missing operand"));
    // Nothing above damaged anything.
    fsck_clean(s);
}

/// A shell holds the image: other commands get "in use" until it exits.
#[test]
fn second_command_while_image_in_use() {
    let d = tmp();
    let img = image(d.path());
    let mut child = bin()
        .args(["shell", &img])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, "mkdir /held\npwd").unwrap();
    stdin.flush().unwrap();
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    assert_eq!(l, "/\n", "the shell answers once mounted");
    let err = fails(&["ls", &img]);
    assert!(err.contains("is in use"), "{err}");
    assert!(fails(&["mkfs", &img, "--force"]).contains("in use"));
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ok(&["ls", &img]), "held\n");
    fsck_clean(&img);
}

/// Namespace damage crafted with the blobstore API: fsck finds it (exit 1), the mount refuses
/// it, --repair moves the file to /lost+found with its data intact.
/// fsck of a file that is no image: the blobstore's error is what the message names, and the
/// namespace is reported as not checked (not as "0 errors").
#[test]
fn fsck_of_a_file_that_is_no_image_names_the_blobstore_error() {
    let dir = tmp();
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0x5Au8; 4 << 20]).unwrap();
    let o = oxblob(&["fsck", p(&junk)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim_end(),
        format!(
            "oxblob: fsck {}: 1 blobstore errors, namespace not checked: not an oxblob \
             blobstore: neither superblock slot carries the magic",
            p(&junk)
        )
    );
    let v = json(&stdout(&oxblob(&["fsck", p(&junk), "--json"])));
    assert_eq!(v["clean"], false);
    assert_eq!(v["namespace_checked"], false);
    // Nothing was written to it.
    assert_eq!(std::fs::read(&junk).unwrap(), vec![0x5Au8; 4 << 20]);
}

#[test]
fn fsck_finds_and_repairs_damaged_namespace() {
    let d = tmp();
    let img = image(d.path());
    let s = img.as_str();
    let f = d.path().join("f");
    std::fs::write(&f, pattern(100_000, 5)).unwrap();
    ok(&["mkdir", s, "/dir"]);
    ok(&["cp", s, p(&f), ":/dir/file"]);
    let ino = json(&ok(&["stat", s, "/dir/file", "--json"]))["ino"]
        .as_u64()
        .unwrap();
    {
        let dev = oxblob_bdev::spec::open(s).unwrap();
        let bs = BlobStore::load(
            Arc::clone(&dev),
            LoadOptions {
                bstype: bstype("BLOBFS"),
                read_only: false,
            },
        )
        .unwrap();
        bs.transaction(|t| {
            t.set_xattr(ino, "parent", &777_777u64.to_le_bytes());
            Ok(())
        })
        .unwrap();
        bs.unload().unwrap();
    }
    let o = oxblob(&["fsck", s]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(
        text.contains(&format!(
            "error: file inode {ino} (\"file\") names parent 777777, which does not exist"
        )),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("DAMAGED: 0 blobstore errors, 1 namespace errors"),
        "{text}"
    );
    assert!(
        stderr(&o).starts_with(&format!(
            "oxblob: fsck {s}: 0 blobstore errors, 1 namespace errors: file inode {ino}"
        )),
        "{}",
        stderr(&o)
    );
    let v = json(&stdout(&oxblob(&["fsck", s, "--json"])));
    assert_eq!(v["clean"], false);
    assert_eq!(v["findings"][0]["kind"], "ParentMissing");
    assert_eq!(v["findings"][0]["ino"], ino);
    let err = fails(&["ls", s]);
    assert!(err.contains("run 'oxblob fsck'"), "{err}");

    let out = ok(&["fsck", s, "--repair"]);
    assert!(
        out.contains(&format!(
            "repaired: moved file {ino} (was \"file\") to /lost+found/#{ino}"
        )),
        "{out}"
    );
    assert!(out.trim_end().ends_with("clean"), "{out}");
    fsck_clean(s);
    let back = d.path().join("back");
    ok(&["cp", s, &format!(":/lost+found/#{ino}"), p(&back)]);
    assert_eq!(std::fs::read(&back).unwrap(), pattern(100_000, 5));
    assert_eq!(ok(&["ls", s]), "dir\nlost+found\n");
}

#[test]
fn config_and_bdev_in_place_of_image() {
    let d = tmp();
    let img = image(d.path());
    let cfg: PathBuf = d.path().join("bdevs.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"subsystems": [{{"subsystem": "bdev", "config": [
                {{"method": "bdev_aio_create", "params": {{"name": "Disk0", "filename": "{img}", "block_size": 4096}}}}]}}]}}"#
        ),
    )
    .unwrap();
    let c = p(&cfg);
    ok(&["mkdir", "--config", c, "--bdev", "Disk0", "/via-config"]);
    assert_eq!(
        ok(&["ls", "--config", c, "--bdev", "Disk0"]),
        "via-config\n"
    );
    assert_eq!(ok(&["ls", &img]), "via-config\n");
    let out = ok(&["mkfs", "--config", c, "--bdev", "Disk0", "--force"]);
    assert!(
        out.starts_with("Initializing filesystem on bdev Disk0...done."),
        "{out}"
    );
}

/// The benchmarks run end to end and report every figure (their speed is not asserted).
#[test]
fn bench_meta_and_fs_report_every_figure() {
    let v = json(&ok(&[
        "bench",
        "meta",
        "--dev",
        "malloc:256MiB",
        "--files",
        "300,600",
        "--layout",
        "flat,tree",
        "--sample",
        "100",
        "--json",
    ]));
    let rs = v["results"].as_array().unwrap();
    assert_eq!(rs.len(), 4, "{v}");
    let mut seen = Vec::new();
    for r in rs {
        seen.push((
            r["layout"].as_str().unwrap().to_string(),
            r["files"].as_u64().unwrap(),
        ));
        for k in [
            "create_ops",
            "stat_ops",
            "readdir_entries",
            "rename_ops",
            "delete_ops",
            "mount_clean_ms",
            "mount_crash_ms",
        ] {
            assert!(r[k].as_f64().unwrap() > 0.0, "{k}: {r}");
        }
        // Enough runs for ~300,000 files of work, at most 9: both sizes run 9 times.
        assert_eq!(r["rounds"], 9, "{r}");
    }
    assert_eq!(
        seen,
        [
            ("flat".into(), 300),
            ("flat".into(), 600),
            ("tree".into(), 300),
            ("tree".into(), 600)
        ]
    );
    // Inodes at the mount: the files, their directories (/flat; /tree and its 300 or 600
    // directories, at most 1,000), and the root.
    let inodes: Vec<u64> = rs.iter().map(|r| r["inodes"].as_u64().unwrap()).collect();
    assert_eq!(inodes, [302, 602, 300 + 300 + 2, 600 + 600 + 2]);
    let scaling = v["scaling"].as_array().unwrap();
    assert_eq!(scaling.len(), 2);
    // Each scaling entry: the ratio of the rates, and the time added per operation, both
    // from the rates of the smallest and the largest count of its layout.
    for s in scaling {
        let of = |files: u64| {
            rs.iter()
                .find(|r| r["layout"] == s["layout"] && r["files"] == files)
                .unwrap()
        };
        let (lo, hi) = (of(300), of(600));
        assert_eq!(
            (s["from_files"].as_u64(), s["to_files"].as_u64()),
            (Some(300), Some(600))
        );
        for (k, rate) in [
            ("create", "create_ops"),
            ("stat", "stat_ops"),
            ("readdir", "readdir_entries"),
            ("rename", "rename_ops"),
            ("delete", "delete_ops"),
        ] {
            let (l, h) = (lo[rate].as_f64().unwrap(), hi[rate].as_f64().unwrap());
            let ratio = s[k].as_f64().unwrap();
            assert!(
                (ratio - h / l).abs() <= 1e-9 * ratio.abs().max(1.0),
                "{k}: {s}"
            );
            let added = s["added_ns"][k].as_f64().unwrap();
            let want = 1e9 / h - 1e9 / l;
            assert!(
                (added - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{k}: {s}"
            );
        }
    }

    let v = json(&ok(&[
        "bench",
        "fs",
        "--dev",
        "malloc:256MiB",
        "--size",
        "8MiB",
        "--seconds",
        "0.2",
        "--json",
    ]));
    let cases = v["cases"].as_array().unwrap();
    let names: Vec<&str> = cases.iter().map(|c| c["rw"].as_str().unwrap()).collect();
    assert_eq!(names, ["write", "read", "randwrite", "randread"]);
    for c in cases {
        assert!(
            c["fs_mib_s"].as_f64().unwrap() > 0.0 && c["raw_mib_s"].as_f64().unwrap() > 0.0,
            "{c}"
        );
        let r = c["ratio"].as_f64().unwrap();
        let want = c["fs_iops"].as_f64().unwrap() / c["raw_iops"].as_f64().unwrap();
        assert!((r - want).abs() < 1e-9 * want.max(1.0), "{c}");
    }
    let err = fails(&["bench", "fs", "--dev", "malloc:64MiB", "--size", "1GiB"]);
    assert!(err.contains("bytes, the file system has"), "{err}");
    let err = fails(&["bench", "meta"]);
    assert!(err.contains("give IMAGE, --dev SPEC"), "{err}");
}

/// A WAL-like file whose synced appends are logged inline, left by a mount that ended without
/// unmount: `bs dump` shows the `WriteData` records, `fsck` is clean, `cat` reads every byte
/// (the read-only replay lays the logged bytes over the device), and a later writable use puts
/// them in place.
#[test]
fn inline_logged_appends_after_a_crash() {
    let d = tmp();
    let img = image(d.path());
    let s = img.as_str();
    let mut want = Vec::new();
    {
        let dev = oxblob_bdev::spec::open(s).unwrap();
        let opts = oxblob_blobfs::MountOptions {
            cache_bytes: 0,
            ..Default::default()
        };
        let fs = oxblob_blobfs::BlobFs::mount(dev, opts).unwrap();
        let h = fs.create("/wal").unwrap();
        // The first append leaves the file's inline form; the next ones are logged inline.
        for i in 0..4u64 {
            let data = pattern(3000 + i as usize * 500, 20 + i);
            h.append_fdatasync(&data).unwrap();
            want.extend_from_slice(&data);
        }
        drop(h);
        drop(fs); // no unmount
    }
    let dump = json(&ok(&["bs", "dump", s, "--json"]));
    let writes: Vec<&serde_json::Value> = dump["log"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["mutations"].as_array().into_iter().flatten())
        .filter_map(|m| m.get("write_data"))
        .collect();
    assert_eq!(writes.len(), 3, "{dump}");
    let mut at = 3000u64;
    for (i, w) in writes.iter().enumerate() {
        let len = 3500 + i as u64 * 500;
        assert_eq!(w["offset"], at);
        assert_eq!(w["len"], len);
        let bytes = &want[at as usize..(at + len) as usize];
        assert_eq!(w["crc"], u64::from(oxblob_format::crc32c(bytes)));
        at += len;
    }
    let text = ok(&["bs", "dump", s]);
    assert!(text.contains("bytes 3000+3500 inline (crc"), "{text}");
    let o = oxblob(&["fsck", s]);
    assert!(o.status.success(), "{}", stdout(&o));
    let out = d.path().join("wal.out");
    ok(&["cp", s, ":/wal", p(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), want);
    ok(&["mv", s, "/wal", "/wal2"]);
    assert!(!ok(&["bs", "dump", s]).contains("inline (crc"));
    ok(&["cp", s, ":/wal2", p(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), want);
}

/// An image whose metadata region fills up: `cp -r` stops with a clear message, and the
/// image stays usable — listed, removed from, copied into again, fsck clean — by later
/// commands, each of which mounts it writable.
#[test]
fn a_full_metadata_region_reports_and_recovers() {
    let dir = tmp();
    let img = dir.path().join("md.img");
    let img = p(&img);
    ok(&[
        "mkfs",
        img,
        "--size",
        "8M",
        "--cluster-size",
        "64k",
        "--md-fraction",
        "64",
    ]);
    let src = dir.path().join("many");
    std::fs::create_dir(&src).unwrap();
    for i in 0..1500 {
        std::fs::write(src.join(format!("{}{i:04}", "n".repeat(200))), b"").unwrap();
    }
    let err = fails(&["cp", "-r", img, p(&src), ":/"]);
    assert!(err.starts_with("oxblob: cannot create ':/many/"), "{err}");
    assert!(
        err.ends_with("No space left on device (no metadata space left)"),
        "{err}"
    );
    let copied = ok(&["ls", img, "/many"]).lines().count();
    assert!((100..1500).contains(&copied), "{copied} copied");
    let md = |img: &str| {
        let v = json(&ok(&["df", img, "--json"]));
        let used = v["metadata_used_bytes"].as_u64().unwrap();
        let limit = v["metadata_limit_bytes"].as_u64().unwrap();
        (used, limit)
    };
    let (used, limit) = md(img);
    assert!(
        used * 100 >= limit * 95 && used <= limit,
        "{used} of {limit}"
    );
    let text = ok(&["df", img]);
    assert!(text.lines().next().unwrap().ends_with("Meta%"), "{text}");
    assert!(text.lines().nth(1).unwrap().ends_with(" 100%"), "{text}");
    fsck_clean(img);
    ok(&["rm", "-r", img, "/many"]);
    assert_eq!(ok(&["ls", img, "/"]).trim(), "");
    let (after, _) = md(img);
    assert!(after * 20 < limit, "{after} of {limit} after the delete");
    let host = dir.path().join("h.txt");
    let data = pattern(100_000, 31);
    std::fs::write(&host, &data).unwrap();
    ok(&["cp", img, p(&host), ":/h.txt"]);
    let out = bin().args(["cat", img, "/h.txt"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, data);
    fsck_clean(img);
}
