//! End-to-end tests of `oxblob bs`: the real binary on temporary image files.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::*;

use serde_json::Value;
use std::path::Path;

fn image(dir: &Path) -> String {
    let p = dir.join("disk.img");
    let s = p.to_str().unwrap().to_string();
    ok(&["bs", "init", &s, "--size", "64M", "--cluster-size", "64k"]);
    s
}

#[test]
fn every_command_has_help() {
    for cmd in [
        "init", "dump", "fsck", "create", "ls", "stat", "xattr", "import", "export", "rm", "resize",
    ] {
        let out = ok(&["bs", cmd, "--help"]);
        assert!(out.contains("Usage: oxblob bs"), "{cmd}: {out}");
    }
    assert!(ok(&["bs", "xattr", "set", "--help"]).contains("IMAGE ID NAME VALUE"));
}

#[test]
fn create_ls_stat_xattr_rm_fsck() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let a = ok(&["bs", "create", &img, "--size", "3", "--xattr", "owner=me"]);
    let a = a.trim().to_string();
    assert_eq!(a, "1", "the id alone on stdout");
    let b = ok(&["bs", "create", &img, "--size", "100k", "--thin"])
        .trim()
        .to_string();
    assert_eq!(b, "2");

    let ls = json(&ok(&["bs", "ls", &img, "--json"]));
    let ls = ls.as_array().unwrap();
    assert_eq!(ls.len(), 2);
    assert_eq!(ls[0]["id"], 1);
    assert_eq!(ls[0]["num_clusters"], 3);
    assert_eq!(ls[0]["allocated_clusters"], 3);
    assert_eq!(ls[0]["thin"], false);
    assert_eq!(ls[0]["xattrs"], 1);
    assert_eq!(
        ls[1]["num_clusters"], 2,
        "100k rounds up to two 64k clusters"
    );
    assert_eq!(ls[1]["allocated_clusters"], 0);
    assert_eq!(ls[1]["thin"], true);
    assert_eq!(ls[1]["parent"], Value::Null);

    let st = json(&ok(&["bs", "stat", &img, &a, "--json"]));
    assert_eq!(st["size_bytes"], 3 * 65536);
    assert_eq!(st["xattrs"][0]["name"], "owner");
    assert_eq!(st["xattrs"][0]["value"], "me");

    ok(&["bs", "xattr", "set", &img, &a, "color", "blue green"]);
    assert_eq!(ok(&["bs", "xattr", "get", &img, &a, "color"]), "blue green");
    ok(&["bs", "xattr", "rm", &img, &a, "color"]);
    let e = fails(&["bs", "xattr", "get", &img, &a, "color"]);
    assert!(e.contains("has no xattr 'color'"), "{e}");

    ok(&["bs", "resize", &img, &b, "5"]);
    let st = json(&ok(&["bs", "stat", &img, &b, "--json"]));
    assert_eq!(st["num_clusters"], 5);

    ok(&["bs", "rm", &img, &a]);
    let ls = json(&ok(&["bs", "ls", &img, "--json"]));
    assert_eq!(ls.as_array().unwrap().len(), 1);
    assert_eq!(ls[0]["id"], 2);

    let r = json(&ok(&["bs", "fsck", &img, "--json"]));
    assert_eq!(r["clean"], true);
    assert_eq!(r["counts"]["blobs"], 1);
    assert!(r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["severity"] == "info"));
    assert!(ok(&["bs", "fsck", &img]).contains("clean"));

    let d = json(&ok(&["bs", "dump", &img, "--json"]));
    assert_eq!(d["checkpoint"]["blob_count"], 1);
    assert_eq!(d["checkpoint"]["next_blob_id"], 3);
    assert_eq!(d["slots"][0]["valid"], true);
    assert!(ok(&["bs", "dump", &img]).contains("checkpoint: 1 blobs, next id 3"));
}

#[test]
fn import_export_round_trip_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    // Not a multiple of the cluster size or of 4 KiB.
    let mut data = pattern(300_001, 7);
    // A zero hole of two whole clusters for the thin import.
    data[65536..3 * 65536].fill(0);
    let src = dir.path().join("in.bin");
    std::fs::write(&src, &data).unwrap();
    let src_s = src.to_str().unwrap();
    let id = ok(&["bs", "import", &img, src_s]).trim().to_string();
    let thin = ok(&["bs", "import", &img, src_s, "--thin"])
        .trim()
        .to_string();
    for (id, name) in [(&id, "out.bin"), (&thin, "thin.bin")] {
        let dst = dir.path().join(name);
        ok(&["bs", "export", &img, id, dst.to_str().unwrap()]);
        let back = std::fs::read(&dst).unwrap();
        assert_eq!(back.len(), data.len(), "blob {id}");
        assert!(back == data, "blob {id}: contents differ");
    }
    let st = json(&ok(&["bs", "stat", &img, &thin, "--json"]));
    assert_eq!(st["num_clusters"], 5);
    assert_eq!(
        st["allocated_clusters"], 3,
        "the zero clusters stay unallocated"
    );
    assert_eq!(st["imported_length"], 300_001);
    // An empty file imports as an empty blob and exports as an empty file.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let e = ok(&["bs", "import", &img, empty.to_str().unwrap()])
        .trim()
        .to_string();
    let eo = dir.path().join("empty.out");
    ok(&["bs", "export", &img, &e, eo.to_str().unwrap()]);
    assert_eq!(std::fs::read(&eo).unwrap().len(), 0);
}

#[test]
fn errors_name_what_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let e = fails(&["bs", "rm", &img, "42"]);
    assert_eq!(e.trim_end(), "oxblob: bs rm 42: blob 42 not found");
    let e = fails(&["bs", "stat", &img, "7"]);
    assert!(e.contains("blob 7 not found"), "{e}");
    let e = fails(&["bs", "rm", &img, "x"]);
    assert!(e.contains("'x' is not a blob id"), "{e}");
    let e = fails(&["bs", "rm", &img]);
    assert!(e.contains("missing ID"), "{e}");
    let e = fails(&["bs", "stat", &img, "1", "2"]);
    assert!(e.contains("unexpected argument '2'"), "{e}");
    let e = fails(&["bs", "create", &img, "--size", "100000"]);
    assert!(e.contains("no space"), "{e}");
    let e = fails(&["bs", "create", &img, "--xattr", "novalue"]);
    assert!(e.contains("not NAME=VALUE"), "{e}");

    let small = dir.path().join("small.img");
    let small_s = small.to_str().unwrap();
    let e = fails(&["bs", "init", small_s, "--size", "1M"]);
    assert!(
        e.starts_with(&format!("oxblob: bs init {small_s}: device too small")),
        "{e}"
    );
    let zero = dir.path().join("zero.img");
    std::fs::write(&zero, vec![0u8; 1 << 20]).unwrap();
    let zero_s = zero.to_str().unwrap();
    for cmd in ["ls", "dump"] {
        let e = fails(&["bs", cmd, zero_s]);
        assert!(e.contains("is not an oxblob blobstore"), "{cmd}: {e}");
    }
    let e = fails(&["bs", "fsck", zero_s]);
    assert!(e.contains("not an oxblob blobstore"), "{e}");
    let missing = dir.path().join("missing.img");
    let e = fails(&["bs", "ls", missing.to_str().unwrap()]);
    assert!(e.contains("missing.img"), "{e}");
    let e = fails(&["bs", "init", &img, "--cluster-size", "3k"]);
    assert!(e.contains("cluster size"), "{e}");
}

fn flip(path: &str, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x5A;
    std::fs::write(path, b).unwrap();
}

#[test]
fn fsck_finds_a_corrupt_checkpoint_and_a_damaged_slot() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    ok(&["bs", "create", &img, "--size", "2"]);
    let d = json(&ok(&["bs", "dump", &img, "--json"]));
    let cur = d["current_slot"].as_u64().unwrap();
    // A damaged non-current slot: a warning, exit 0; repair rewrites it.
    flip(&img, (1 - cur) * 4096 + 300);
    let o = oxblob(&["bs", "fsck", &img]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("warning: superblock slot"),
        "{}",
        stdout(&o)
    );
    let r = json(&ok(&["bs", "fsck", &img, "--repair", "--json"]));
    assert_eq!(r["clean"], true);
    assert!(!r["repairs"].as_array().unwrap().is_empty());
    let r = json(&ok(&["bs", "fsck", &img, "--json"]));
    assert!(r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["severity"] == "info"));

    // A checkpoint byte: exit 1, the damage named on stdout and stderr, not repairable.
    let d = json(&ok(&["bs", "dump", &img, "--json"]));
    let cur = d["current_slot"].as_u64().unwrap() as usize;
    let ck = &d["slots"][cur]["superblock"]["checkpoint"];
    let at = ck["first_page"].as_u64().unwrap() * 4096 + ck["len"].as_u64().unwrap() / 2;
    flip(&img, at);
    let o = oxblob(&["bs", "fsck", &img]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "oxblob: bs fsck {img}: 1 errors found: checkpoint"
        )),
        "{err}"
    );
    assert!(stdout(&o).contains("DAMAGED"), "{}", stdout(&o));
    let o = oxblob(&["bs", "fsck", &img, "--repair", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let r = json(&stdout(&o));
    assert_eq!(r["clean"], false);
    assert_eq!(r["findings"][0]["kind"], "checkpoint_invalid");
    assert!(
        stderr(&o).contains("damage remains after repair"),
        "{}",
        stderr(&o)
    );
    let e = fails(&["bs", "ls", &img]);
    assert!(e.contains("checksum"), "{e}");
}

#[test]
fn config_and_bdev_in_place_of_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let cfg = dir.path().join("bdevs.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"subsystems":[{{"subsystem":"bdev","config":[
            {{"method":"bdev_aio_create","params":{{"name":"Disk0","filename":"{img}","block_size":4096}}}}
        ]}}]}}"#
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let id = ok(&[
        "bs", "create", "--config", c, "--bdev", "Disk0", "--size", "1",
    ])
    .trim()
    .to_string();
    ok(&[
        "bs", "xattr", "set", "--config", c, "--bdev", "Disk0", &id, "k", "v",
    ]);
    assert_eq!(
        ok(&["bs", "xattr", "get", &img, &id, "k"]),
        "v",
        "the same image through its path"
    );
    let st = json(&ok(&[
        "bs", "stat", "--config", c, "--bdev", "Disk0", &id, "--json",
    ]));
    assert_eq!(st["num_clusters"], 1);
}

#[test]
fn snapshot_and_clone_share_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path());
    let data = pattern(200_000, 3);
    let src = dir.path().join("in.bin");
    std::fs::write(&src, &data).unwrap();
    let id = ok(&["bs", "import", &img, src.to_str().unwrap()])
        .trim()
        .to_string();
    let e = fails(&["bs", "clone", &img, &id]);
    assert!(e.contains("not read-only"), "{e}");
    let snap = ok(&["bs", "snapshot", &img, &id]).trim().to_string();
    let clone = ok(&["bs", "clone", &img, &snap]).trim().to_string();
    assert_ne!(snap, id);
    assert_ne!(clone, snap);
    let ls = json(&ok(&["bs", "ls", &img, "--json"]));
    let by_id = |x: &str| {
        ls.as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"].as_u64().map(|v| v.to_string()).as_deref() == Some(x))
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id(&snap)["read_only"], true);
    assert_eq!(by_id(&id)["parent"].to_string(), snap);
    assert_eq!(by_id(&clone)["parent"].to_string(), snap);
    assert_eq!(by_id(&id)["allocated_clusters"], 0);
    // The original (now a clone of the snapshot) still reads its bytes.
    let out = dir.path().join("out.bin");
    ok(&["bs", "export", &img, &id, out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == data);
    let e = fails(&["bs", "rm", &img, &snap]);
    assert!(e.contains(&format!("blob {snap} has clones")), "{e}");
    let r = json(&ok(&["bs", "fsck", &img, "--json"]));
    assert_eq!(r["clean"], true);
    assert_eq!(r["counts"]["blobs"], 3);
}
