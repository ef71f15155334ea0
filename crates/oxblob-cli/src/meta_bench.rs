//! Engines of `oxblob bench meta` (namespace operations per second as the file count grows, and
//! mount time) and `oxblob bench fs` (file data through blobfs against the raw device range).
//!
//! Both re-format the device. Every figure is measured on a release build by the caller; nothing
//! here asserts a speed.

use oxblob_bdev::{blocking, BlockDevice, IoBuf};
use oxblob_blobfs::{BlobFs, FsError, MkfsOptions, MountOptions, OpenFlags};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the files of a metadata run live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Every file in one directory.
    Flat,
    /// Files spread round-robin over [`TREE_DIRS`] directories.
    Tree,
}

/// Directories of the `tree` layout.
pub const TREE_DIRS: u64 = 1000;

/// Parameters of one metadata run.
#[derive(Debug, Clone)]
pub struct MetaParams {
    /// Files to create.
    pub files: u64,
    /// Layout.
    pub layout: Layout,
    /// Random stats measured (drawn with repeats, so as many at every size) and renames
    /// measured (capped at `files`: each file is renamed at most once).
    pub sample: u64,
    /// Format options.
    pub mkfs: MkfsOptions,
    /// Seed of the random choices.
    pub seed: u64,
}

/// Results of one metadata run. Rates are operations per second.
#[derive(Debug, Clone, Serialize)]
pub struct MetaResult {
    /// Files.
    pub files: u64,
    /// Layout.
    pub layout: Layout,
    /// Creates (open with create+exclusive, then close) per second.
    pub create_ops: f64,
    /// Random `stat`s per second.
    pub stat_ops: f64,
    /// Directory entries returned by `readdir` per second (every directory, repeated until
    /// about a million entries were read).
    pub readdir_entries: f64,
    /// Random renames (within the file's directory) per second.
    pub rename_ops: f64,
    /// Unlinks of every file per second.
    pub delete_ops: f64,
    /// Mount of the image with every file, after a clean unmount, in ms.
    pub mount_clean_ms: f64,
    /// Mount after a crash (the mount dropped without unmount after the renames), in ms.
    pub mount_crash_ms: f64,
    /// Inodes at the mounts (files, directories, root).
    pub inodes: u64,
    /// Runs the figures are the medians of (1 for a single run).
    pub rounds: u64,
}

fn median_of(runs: &[MetaResult], f: impl Fn(&MetaResult) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Every figure of `runs` (runs of one size and layout) replaced by its median over the runs;
/// for an even count, the mean of the two middle values. `runs` must not be empty.
pub fn median(runs: &[MetaResult]) -> MetaResult {
    let mut m = runs[0].clone();
    m.create_ops = median_of(runs, |r| r.create_ops);
    m.stat_ops = median_of(runs, |r| r.stat_ops);
    m.readdir_entries = median_of(runs, |r| r.readdir_entries);
    m.rename_ops = median_of(runs, |r| r.rename_ops);
    m.delete_ops = median_of(runs, |r| r.delete_ops);
    m.mount_clean_ms = median_of(runs, |r| r.mount_clean_ms);
    m.mount_crash_ms = median_of(runs, |r| r.mount_crash_ms);
    m.rounds = runs.len() as u64;
    m
}

/// Progress callback: phase name, done, total.
pub type Tick<'a> = &'a mut dyn FnMut(&str, u64, u64);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn dir_of(layout: Layout, i: u64) -> String {
    match layout {
        Layout::Flat => "/flat".to_string(),
        Layout::Tree => format!("/tree/d{:03}", i % TREE_DIRS),
    }
}

fn name_of(layout: Layout, i: u64, renamed: bool) -> String {
    format!(
        "{}/f{i:07}{}",
        dir_of(layout, i),
        if renamed { ".r" } else { "" }
    )
}

fn err(what: &str, e: FsError) -> String {
    format!("{what}: {e}")
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

const TICK_EVERY: u64 = 4096;

/// One metadata run on `dev` (re-formatted).
pub fn run_meta(
    dev: &Arc<dyn BlockDevice>,
    p: &MetaParams,
    tick: Tick,
) -> Result<MetaResult, String> {
    let n = p.files;
    let layout = p.layout;
    BlobFs::mkfs(Arc::clone(dev), p.mkfs.clone()).map_err(|e| err("mkfs", e))?;
    let mount = |what: &str| {
        BlobFs::mount(Arc::clone(dev), MountOptions::default()).map_err(|e| err(what, e))
    };
    let fs = mount("mount")?;
    let dirs: Vec<String> = match layout {
        Layout::Flat => vec!["/flat".to_string()],
        Layout::Tree => (0..TREE_DIRS.min(n.max(1)))
            .map(|d| format!("/tree/d{d:03}"))
            .collect(),
    };
    for d in &dirs {
        fs.mkdir_all(d).map_err(|e| err("mkdir", e))?;
    }
    let flags = OpenFlags {
        read: true,
        write: true,
        create: true,
        exclusive: true,
        ..Default::default()
    };
    let t = Instant::now();
    for i in 0..n {
        let path = name_of(layout, i, false);
        let h = fs.open(&path, flags).map_err(|e| err("create", e))?;
        h.close().map_err(|e| err("close", e))?;
        if i % TICK_EVERY == 0 {
            tick("create", i, n);
        }
    }
    let create = t.elapsed();
    let inodes = fs.statfs().map_err(|e| err("statfs", e))?.files;
    fs.unmount().map_err(|e| err("unmount", e))?;
    drop(fs);
    tick("mount (clean)", 0, 1);
    let t = Instant::now();
    let fs = mount("mount after unmount")?;
    let mount_clean = t.elapsed();

    let stats = p.sample.max(1);
    let sample = p.sample.min(n);
    let mut rng = Rng(p.seed | 1);
    let t = Instant::now();
    for k in 0..stats {
        let i = rng.below(n);
        fs.stat(&name_of(layout, i, false))
            .map_err(|e| err("stat", e))?;
        if k % TICK_EVERY == 0 {
            tick("stat", k, stats);
        }
    }
    let stat = t.elapsed();

    let passes = (1_000_000 / n.max(1)).clamp(1, 100);
    let mut entries = 0u64;
    let t = Instant::now();
    for pass in 0..passes {
        for d in &dirs {
            entries += fs.readdir(d).map_err(|e| err("readdir", e))?.len() as u64;
        }
        tick("readdir", pass, passes);
    }
    let readdir = t.elapsed();
    if entries != n * passes {
        return Err(format!(
            "readdir returned {entries} entries, expected {}",
            n * passes
        ));
    }

    // Distinct random files to rename: a partial Fisher-Yates shuffle.
    let mut idx: Vec<u64> = (0..n).collect();
    for k in 0..sample as usize {
        let j = k + rng.below(n - k as u64) as usize;
        idx.swap(k, j);
    }
    let mut renamed = vec![false; n as usize];
    let t = Instant::now();
    for (k, &i) in idx[..sample as usize].iter().enumerate() {
        fs.rename(&name_of(layout, i, false), &name_of(layout, i, true))
            .map_err(|e| err("rename", e))?;
        renamed[i as usize] = true;
        if k as u64 % TICK_EVERY == 0 {
            tick("rename", k as u64, sample);
        }
    }
    let rename = t.elapsed();
    // A crash: the mount goes away without unmount.
    drop(fs);
    tick("mount (after crash)", 0, 1);
    let t = Instant::now();
    let fs = mount("mount after crash")?;
    let mount_crash = t.elapsed();

    let t = Instant::now();
    for i in 0..n {
        fs.unlink(&name_of(layout, i, renamed[i as usize]))
            .map_err(|e| err("unlink", e))?;
        if i % TICK_EVERY == 0 {
            tick("delete", i, n);
        }
    }
    let delete = t.elapsed();
    fs.unmount().map_err(|e| err("unmount", e))?;
    Ok(MetaResult {
        files: n,
        layout,
        create_ops: rate(n, create),
        stat_ops: rate(stats, stat),
        readdir_entries: rate(entries, readdir),
        rename_ops: rate(sample, rename),
        delete_ops: rate(n, delete),
        mount_clean_ms: mount_clean.as_secs_f64() * 1e3,
        mount_crash_ms: mount_crash.as_secs_f64() * 1e3,
        inodes,
        rounds: 1,
    })
}

/// Parameters of `bench fs`.
#[derive(Debug, Clone)]
pub struct FsParams {
    /// File size (and raw range) in bytes.
    pub size: u64,
    /// Request size of the sequential patterns.
    pub seq_bs: usize,
    /// Request size of the random patterns.
    pub rand_bs: usize,
    /// Seconds per random pattern.
    pub seconds: f64,
    /// Format options.
    pub mkfs: MkfsOptions,
    /// Seed of the random offsets.
    pub seed: u64,
}

/// One pattern through blobfs and on the raw device.
#[derive(Debug, Clone, Serialize)]
pub struct FsCase {
    /// `write`, `read`, `randwrite`, `randread`.
    pub rw: &'static str,
    /// Request size.
    pub bs: usize,
    /// MiB/s through a blobfs file.
    pub fs_mib_s: f64,
    /// MiB/s on the raw device range.
    pub raw_mib_s: f64,
    /// I/Os per second through blobfs.
    pub fs_iops: f64,
    /// I/Os per second raw.
    pub raw_iops: f64,
    /// fs / raw.
    pub ratio: f64,
}

/// The I/O one pattern needs, on either target.
trait Target {
    fn write(&mut self, off: u64, data: &[u8]) -> Result<(), String>;
    fn read(&mut self, off: u64, len: usize) -> Result<(), String>;
    fn sync(&mut self) -> Result<(), String>;
}

struct FileTarget(oxblob_blobfs::FileHandle, Vec<u8>);

impl Target for FileTarget {
    fn write(&mut self, off: u64, data: &[u8]) -> Result<(), String> {
        self.0.write_at(off, data).map_err(|e| err("write", e))
    }
    fn read(&mut self, off: u64, len: usize) -> Result<(), String> {
        self.1.resize(len, 0);
        let n = self
            .0
            .read_at(off, &mut self.1)
            .map_err(|e| err("read", e))?;
        if n != len {
            return Err(format!("short read at {off}: {n} of {len}"));
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<(), String> {
        self.0.fsync().map_err(|e| err("fsync", e))
    }
}

struct RawTarget {
    ch: Box<dyn oxblob_bdev::IoChannel>,
    base: u64,
    buf: Option<IoBuf>,
}

impl Target for RawTarget {
    fn write(&mut self, off: u64, data: &[u8]) -> Result<(), String> {
        let mut b = self.buf.take().unwrap_or_else(|| IoBuf::zeroed(data.len()));
        b.resize(data.len());
        b.as_mut_slice().copy_from_slice(data);
        let b = blocking::write(self.ch.as_mut(), self.base + off, b).map_err(|e| e.to_string())?;
        self.buf = Some(b);
        Ok(())
    }
    fn read(&mut self, off: u64, len: usize) -> Result<(), String> {
        let mut b = self.buf.take().unwrap_or_else(|| IoBuf::zeroed(len));
        b.resize(len);
        let b =
            blocking::read_into(self.ch.as_mut(), self.base + off, b).map_err(|e| e.to_string())?;
        self.buf = Some(b);
        Ok(())
    }
    fn sync(&mut self) -> Result<(), String> {
        blocking::flush(self.ch.as_mut()).map_err(|e| e.to_string())
    }
}

/// Runs the four patterns on `t`; returns (ios, seconds) per pattern.
fn patterns(t: &mut dyn Target, p: &FsParams, tick: Tick) -> Result<Vec<(u64, f64)>, String> {
    let data: Vec<u8> = (0..p.seq_bs.max(p.rand_bs))
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let mut out = Vec::new();
    let seq_ios = p.size / p.seq_bs as u64;
    let t0 = Instant::now();
    for k in 0..seq_ios {
        t.write(k * p.seq_bs as u64, &data[..p.seq_bs])?;
        if k % 64 == 0 {
            tick("write", k, seq_ios);
        }
    }
    t.sync()?;
    out.push((seq_ios, t0.elapsed().as_secs_f64()));
    let t0 = Instant::now();
    for k in 0..seq_ios {
        t.read(k * p.seq_bs as u64, p.seq_bs)?;
        if k % 64 == 0 {
            tick("read", k, seq_ios);
        }
    }
    out.push((seq_ios, t0.elapsed().as_secs_f64()));
    let slots = p.size / p.rand_bs as u64;
    for (name, write) in [("randwrite", true), ("randread", false)] {
        let mut rng = Rng(p.seed | 1);
        let t0 = Instant::now();
        let limit = Duration::from_secs_f64(p.seconds);
        let mut ios = 0u64;
        while t0.elapsed() < limit {
            for _ in 0..64 {
                let off = rng.below(slots) * p.rand_bs as u64;
                if write {
                    t.write(off, &data[..p.rand_bs])?;
                } else {
                    t.read(off, p.rand_bs)?;
                }
                ios += 1;
            }
            tick(
                name,
                t0.elapsed().as_millis() as u64,
                limit.as_millis() as u64,
            );
        }
        if write {
            t.sync()?;
        }
        out.push((ios, t0.elapsed().as_secs_f64()));
    }
    Ok(out)
}

/// `bench fs`: a file of `size` bytes through blobfs, then the same patterns on the raw device
/// range where the data region starts (after unmount). Re-formats the device.
pub fn run_fs(dev: &Arc<dyn BlockDevice>, p: &FsParams, tick: Tick) -> Result<Vec<FsCase>, String> {
    BlobFs::mkfs(Arc::clone(dev), p.mkfs.clone()).map_err(|e| err("mkfs", e))?;
    let fs =
        BlobFs::mount(Arc::clone(dev), MountOptions::default()).map_err(|e| err("mount", e))?;
    let st = fs.statfs().map_err(|e| err("statfs", e))?;
    if st.free_bytes < p.size {
        return Err(format!(
            "the file needs {} bytes, the file system has {} free",
            p.size, st.free_bytes
        ));
    }
    let base = fs
        .store()
        .superblock()
        .map_err(|e| e.to_string())?
        .data_first_byte;
    let h = fs.create("/bench").map_err(|e| err("create", e))?;
    let mut ft = FileTarget(h, Vec::new());
    let fsr = patterns(&mut ft, p, tick)?;
    ft.0.close().map_err(|e| err("close", e))?;
    fs.unmount().map_err(|e| err("unmount", e))?;
    drop(fs);
    let mut rt = RawTarget {
        ch: dev.channel().map_err(|e| e.to_string())?,
        base,
        buf: None,
    };
    let raw = patterns(&mut rt, p, tick)?;
    let names = ["write", "read", "randwrite", "randread"];
    Ok(names
        .iter()
        .zip(fsr.iter().zip(raw.iter()))
        .enumerate()
        .map(|(k, (name, (&(fi, fsec), &(ri, rsec))))| {
            let bs = if k < 2 { p.seq_bs } else { p.rand_bs };
            let fs_iops = fi as f64 / fsec.max(1e-9);
            let raw_iops = ri as f64 / rsec.max(1e-9);
            FsCase {
                rw: name,
                bs,
                fs_mib_s: fs_iops * bs as f64 / (1 << 20) as f64,
                raw_mib_s: raw_iops * bs as f64 / (1 << 20) as f64,
                fs_iops,
                raw_iops,
                ratio: fs_iops / raw_iops.max(1e-9),
            }
        })
        .collect())
}
