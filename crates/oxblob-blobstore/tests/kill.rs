//! Process crashes on a real file image: a child process (this test binary re-executed with
//! `OXBLOB_KILL_CHILD` set) opens a blobstore on `file:/var/tmp/<unique>.img` (io_uring with
//! `O_DIRECT`, `flock`ed) and loops over create / write / resize / set-xattr / delete, each
//! followed by `sync_md` (or durable by itself), printing `BEGIN <step>` before and `ACK <step>`
//! after every step. The parent SIGKILLs it at a random moment, reaps it (the kernel releases the
//! lock), runs `fsck` (a torn log tail is info, not an error), loads the image and checks every
//! acknowledged step byte for byte against its model: blob set, sizes, xattrs and the whole
//! content of every blob. The one step that began without an ACK may have happened or not
//! (whole for metadata; per 4 KiB block for its data write); the observed outcome is adopted
//! and the next child continues on the same image.
//!
//! **What this does not test:** SIGKILL of a process keeps the page cache and whatever the
//! kernel already accepted, so this is the process-crash path (a store killed mid-operation),
//! not power loss. Power loss — unflushed writes dropped, reordered or torn — is what the
//! `CrashDevice` sweeps in `crash.rs` cover.
//!
//! Default: 5 rounds. `OXBLOB_FULL=1`: 50. `OXBLOB_SEED` shifts the seeds; failures print the
//! round, its seed and the image path (kept on failure).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;
use common::pattern;
use oxblob_bdev::BlockDevice;
use oxblob_blobstore::{fsck, BlobStore, CreateOptions, FsckOptions, InitOptions, LoadOptions};
use rand::Rng;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const CLUSTER: u64 = 64 * 1024;
/// The file image's block size (the blob io unit).
const IO: u64 = 4096;
const IMAGE_MIB: u64 = 32;
const MAX_BLOBS: usize = 24;
const MAX_CLUSTERS: u64 = 6;
const NAMES: [&str; 3] = ["a", "b", "c"];
const CHILD_ENV: &str = "OXBLOB_KILL_CHILD";

fn spec(path: &str) -> String {
    format!("file:{path}")
}

fn xattr_value(seed: u64) -> Vec<u8> {
    pattern(seed, 1 + (seed % 200) as usize)
}

/// One step, as printed by the child (`BEGIN`/`ACK` + these words).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `create <id> <clusters> <thin 0|1> <xattr seed>`; id is 0 in BEGIN (not known yet).
    Create(u64, u64, bool, u64),
    /// `write <id> <offset> <len> <data seed>`
    Write(u64, u64, u64, u64),
    /// `resize <id> <clusters>`
    Resize(u64, u64),
    /// `xattr <id> <name index> <value seed>`
    Xattr(u64, usize, u64),
    /// `delete <id>`
    Delete(u64),
}

impl Step {
    fn line(&self) -> String {
        match self {
            Step::Create(id, n, thin, s) => format!("create {id} {n} {} {s}", u8::from(*thin)),
            Step::Write(id, off, len, s) => format!("write {id} {off} {len} {s}"),
            Step::Resize(id, n) => format!("resize {id} {n}"),
            Step::Xattr(id, k, s) => format!("xattr {id} {k} {s}"),
            Step::Delete(id) => format!("delete {id}"),
        }
    }

    fn parse(words: &[&str]) -> Option<Step> {
        let n = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
        Some(match *words.first()? {
            "create" => Step::Create(n(1)?, n(2)?, n(3)? == 1, n(4)?),
            "write" => Step::Write(n(1)?, n(2)?, n(3)?, n(4)?),
            "resize" => Step::Resize(n(1)?, n(2)?),
            "xattr" => Step::Xattr(n(1)?, n(2)? as usize, n(3)?),
            "delete" => Step::Delete(n(1)?),
            _ => return None,
        })
    }
}

/// The child: runs steps until killed.
fn child(path: &str, seed: u64) {
    let d = oxblob_bdev::spec::open(&spec(path)).unwrap();
    let bs = BlobStore::load(d, LoadOptions::default()).unwrap();
    let mut ch = bs.channel().unwrap();
    let mut rng = oxblob_sim::rng::rng(seed);
    let out = std::io::stdout();
    let say = |s: String| {
        let mut o = out.lock();
        o.write_all(s.as_bytes()).unwrap();
        o.flush().unwrap();
    };
    // libtest has printed "test kill_child_role ... " without a newline: start a fresh line.
    say("\nREADY\n".to_string());
    loop {
        let blobs = bs.blobs().unwrap();
        let op = if blobs.is_empty() {
            0
        } else if blobs.len() >= MAX_BLOBS {
            4
        } else {
            rng.gen_range(0..10)
        };
        let pick =
            |rng: &mut oxblob_sim::rng::SmallRng| blobs[rng.gen_range(0..blobs.len())].clone();
        match op {
            0 | 1 => {
                let n = rng.gen_range(0..=MAX_CLUSTERS / 2);
                let thin = rng.gen_bool(0.5);
                let xs = rng.gen::<u32>() as u64;
                say(format!("BEGIN {}\n", Step::Create(0, n, thin, xs).line()));
                let id = bs
                    .create_blob(CreateOptions {
                        num_clusters: n,
                        thin,
                        xattrs: vec![(NAMES[0].to_string(), xattr_value(xs))],
                    })
                    .unwrap();
                say(format!("ACK {}\n", Step::Create(id, n, thin, xs).line()));
            }
            2..=5 => {
                let info = pick(&mut rng);
                let size = info.num_clusters * CLUSTER;
                if size == 0 {
                    continue;
                }
                let off = rng.gen_range(0..size / IO) * IO;
                let len = (rng.gen_range(1..=16u64) * IO).min(size - off);
                let ds = rng.gen::<u32>() as u64;
                let step = Step::Write(info.id, off, len, ds);
                say(format!("BEGIN {}\n", step.line()));
                let b = bs.open_blob(info.id).unwrap();
                b.write(&mut ch, off, &pattern(ds, len as usize)).unwrap();
                b.sync_md().unwrap();
                drop(b);
                say(format!("ACK {}\n", step.line()));
            }
            6 => {
                let info = pick(&mut rng);
                let n = rng.gen_range(0..=MAX_CLUSTERS);
                let step = Step::Resize(info.id, n);
                say(format!("BEGIN {}\n", step.line()));
                let b = bs.open_blob(info.id).unwrap();
                b.resize(n).unwrap();
                b.sync_md().unwrap();
                drop(b);
                say(format!("ACK {}\n", step.line()));
            }
            7 | 8 => {
                let info = pick(&mut rng);
                let k = rng.gen_range(0..NAMES.len());
                let vs = rng.gen::<u32>() as u64;
                let step = Step::Xattr(info.id, k, vs);
                say(format!("BEGIN {}\n", step.line()));
                let b = bs.open_blob(info.id).unwrap();
                b.set_xattr(NAMES[k], &xattr_value(vs)).unwrap();
                b.sync_md().unwrap();
                drop(b);
                say(format!("ACK {}\n", step.line()));
            }
            _ => {
                let info = pick(&mut rng);
                let step = Step::Delete(info.id);
                say(format!("BEGIN {}\n", step.line()));
                bs.delete_blob(info.id).unwrap();
                say(format!("ACK {}\n", step.line()));
            }
        }
    }
}

/// Entry point of the child role; does nothing in a normal test run.
#[test]
fn kill_child_role() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (path, seed) = arg.split_once(',').unwrap();
    child(path, seed.parse().unwrap());
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct BlobModel {
    data: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

type Model = BTreeMap<u64, BlobModel>;

fn apply(model: &mut Model, step: &Step) {
    match *step {
        Step::Create(id, n, _, xs) => {
            let mut xattrs = BTreeMap::new();
            xattrs.insert(NAMES[0].to_string(), xattr_value(xs));
            model.insert(
                id,
                BlobModel {
                    data: vec![0; (n * CLUSTER) as usize],
                    xattrs,
                },
            );
        }
        Step::Write(id, off, len, ds) => {
            let b = model.get_mut(&id).unwrap();
            b.data[off as usize..(off + len) as usize].copy_from_slice(&pattern(ds, len as usize));
        }
        Step::Resize(id, n) => {
            model
                .get_mut(&id)
                .unwrap()
                .data
                .resize((n * CLUSTER) as usize, 0);
        }
        Step::Xattr(id, k, vs) => {
            model
                .get_mut(&id)
                .unwrap()
                .xattrs
                .insert(NAMES[k].to_string(), xattr_value(vs));
        }
        Step::Delete(id) => {
            model.remove(&id);
        }
    }
}

/// What the image holds now: every blob's whole content and user xattrs.
fn observe(d: &Arc<dyn BlockDevice>) -> Model {
    let bs = BlobStore::load(
        Arc::clone(d),
        LoadOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut ch = bs.channel().unwrap();
    let mut m = Model::new();
    for info in bs.blobs().unwrap() {
        let b = bs.open_blob(info.id).unwrap();
        let data = if b.size_bytes() > 0 {
            b.read(&mut ch, 0, b.size_bytes() as usize).unwrap()
        } else {
            Vec::new()
        };
        m.insert(
            info.id,
            BlobModel {
                data,
                xattrs: info.xattrs.into_iter().collect(),
            },
        );
    }
    bs.unload().unwrap();
    m
}

/// Checks `seen` against `model` with the acknowledged steps applied and `pending` (begun,
/// not acknowledged) either applied or not; returns the model to continue with.
fn reconcile(model: &Model, pending: Option<&Step>, seen: &Model, ctx: &str) -> Model {
    if seen == model {
        return seen.clone();
    }
    let Some(step) = pending else {
        panic!(
            "{ctx}: image differs from the acknowledged steps\n{}",
            diff(model, seen)
        );
    };
    match *step {
        Step::Create(_, n, _, xs) => {
            // One new blob with the step's size, zeroes and xattr; all else as acknowledged.
            let extra: Vec<u64> = seen
                .keys()
                .filter(|k| !model.contains_key(k))
                .copied()
                .collect();
            assert_eq!(
                extra.len(),
                1,
                "{ctx}: pending {step:?}\n{}",
                diff(model, seen)
            );
            let mut after = model.clone();
            apply(&mut after, &Step::Create(extra[0], n, false, xs));
            assert!(
                seen == &after,
                "{ctx}: pending {step:?}\n{}",
                diff(&after, seen)
            );
        }
        Step::Write(id, off, len, ds) => {
            // Metadata as acknowledged; each 4 KiB block of the range old or new.
            let mut after = model.clone();
            apply(&mut after, step);
            let (s, a, b) = (&seen[&id], &after[&id], &model[&id]);
            assert_eq!(s.xattrs, b.xattrs, "{ctx}: pending {step:?}");
            assert_eq!(s.data.len(), b.data.len(), "{ctx}: pending {step:?}");
            for (i, blk) in s.data.chunks(IO as usize).enumerate() {
                let r = i * IO as usize..(i + 1) * IO as usize;
                assert!(
                    blk == &a.data[r.clone()] || blk == &b.data[r.clone()],
                    "{ctx}: pending write {id} {off}+{len} seed {ds}: block {i} is neither old nor new"
                );
            }
            let mut others = seen.clone();
            others.insert(id, b.clone());
            assert!(
                &others == model,
                "{ctx}: pending {step:?}\n{}",
                diff(model, &others)
            );
        }
        _ => {
            let mut after = model.clone();
            apply(&mut after, step);
            assert!(
                seen == &after,
                "{ctx}: pending {step:?}\n{}",
                diff(&after, seen)
            );
        }
    }
    seen.clone()
}

fn diff(want: &Model, got: &Model) -> String {
    let mut s = String::new();
    for id in want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (want.get(id), got.get(id)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                let first = a.data.iter().zip(&b.data).position(|(x, y)| x != y);
                s += &format!(
                    "blob {id}: size {} vs {}, first differing byte {first:?}, xattrs equal {}\n",
                    a.data.len(),
                    b.data.len(),
                    a.xattrs == b.xattrs
                );
            }
            (Some(_), None) => s += &format!("blob {id}: missing\n"),
            (None, Some(_)) => s += &format!("blob {id}: unexpected\n"),
            (None, None) => {}
        }
    }
    s
}

/// Opens the image once the killed child's lock is gone. The lock goes with the last
/// reference to the child's open file, and io_uring requests still in flight at the kill hold
/// one until the kernel has finished or cancelled them (ring teardown is asynchronous), so the
/// image can stay locked for a moment after `wait` returns.
fn open_after_kill(path: &str, ctx: &str) -> Arc<dyn BlockDevice> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match oxblob_bdev::spec::open(&spec(path)) {
            Ok(d) => return d,
            Err(oxblob_bdev::BdevError::InUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{ctx}: open after the kill: {e:?}"),
        }
    }
}

#[test]
fn sigkill_loses_no_acknowledged_step() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let full = std::env::var("OXBLOB_FULL").is_ok_and(|v| v == "1");
    let rounds = if full { 50 } else { 5 };
    let base_seed = oxblob_sim::rng::seed_from_env(0x0B10_B0C1);
    let path = format!(
        "/var/tmp/oxblob-kill-{}-{}.img",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    {
        let d = oxblob_bdev::spec::open(&format!("{}?create={IMAGE_MIB}MiB", spec(&path))).unwrap();
        let bs = BlobStore::init(
            d,
            InitOptions {
                cluster_size: CLUSTER,
                md_pages: Some(256),
                md_segment_pages: 4,
                bstype: oxblob_blobstore::bstype("KILL"),
            },
        )
        .unwrap();
        bs.unload().unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let mut model = Model::new();
    let mut rng = oxblob_sim::rng::rng(base_seed);
    let (mut acks, mut pendings_applied) = (0usize, 0usize);
    for round in 0..rounds {
        let seed = base_seed.wrapping_add(round);
        let ctx = format!("round {round} seed {seed:#x} image {path}");
        let mut child = Command::new(&exe)
            .args([
                "kill_child_role",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{path},{seed}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut buf = String::new();
            // Only whole lines count: a line cut by the kill has no newline.
            while r.read_line(&mut buf).is_ok_and(|n| n > 0) {
                if buf.ends_with('\n') {
                    if buf == "READY\n" {
                        let _ = tx.send(());
                    }
                    lines.push(buf.trim_end().to_string());
                }
                buf.clear();
            }
            lines
        });
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{ctx}: child did not start"));
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..400)));
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        // Acknowledged steps in order; the last BEGIN without its ACK is pending.
        let mut pending = None;
        for l in &lines {
            let words: Vec<&str> = l.split(' ').collect();
            match words.first() {
                Some(&"BEGIN") => pending = Step::parse(&words[1..]),
                Some(&"ACK") => {
                    let step = Step::parse(&words[1..]).unwrap();
                    apply(&mut model, &step);
                    acks += 1;
                    pending = None;
                }
                _ => {}
            }
        }
        let d = open_after_kill(&path, &ctx);
        let report = fsck(&d, FsckOptions::default()).unwrap();
        assert!(report.is_clean(), "{ctx}: fsck after the kill:\n{report}");
        let seen = observe(&d);
        let before = model.clone();
        model = reconcile(&model, pending.as_ref(), &seen, &ctx);
        pendings_applied += usize::from(model != before);
        drop(d);
        eprintln!(
            "{ctx}: {} lines, {} blobs, pending {:?}",
            lines.len(),
            model.len(),
            pending.map(|p| p.line())
        );
    }
    // The image is whole after the last kill: a writable load and unload, then fsck clean.
    let d = oxblob_bdev::spec::open(&spec(&path)).unwrap();
    BlobStore::load(Arc::clone(&d), LoadOptions::default())
        .unwrap()
        .unload()
        .unwrap();
    assert!(fsck(&d, FsckOptions::default()).unwrap().is_clean());
    assert_eq!(observe(&d), model);
    drop(d);
    eprintln!("{rounds} kills: {acks} acknowledged steps verified, {pendings_applied} unacknowledged steps found applied");
    assert!(acks > 0, "no step was acknowledged before the kills");
    std::fs::remove_file(&path).unwrap();
}
