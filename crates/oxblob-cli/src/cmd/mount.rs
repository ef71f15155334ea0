//! `oxblob mount IMAGE MOUNTPOINT [--foreground] [--allow-other] [--threads N]
//! [--no-writeback-cache]` and
//! `oxblob umount MOUNTPOINT`: an image as an ordinary directory tree through FUSE
//! (`oxblob-fuse`).
//!
//! Without `--foreground`, `mount` starts itself again with `--foreground` in the background
//! (its own process group, standard input and output on `/dev/null`, standard error in a
//! temporary file), waits until the mount appears in `/proc/self/mountinfo` and prints where
//! it is; if the background process exits first, its error is shown instead. The
//! foreground process serves until the mount goes away (`oxblob umount`, `umount`,
//! `fusermount3 -u`) or SIGINT/SIGTERM arrives, then unmounts blobfs cleanly.
//!
//! `umount` unmounts (failing with "busy" while files are open there, as `umount` does) and
//! waits until the daemon has released the image, so the image is clean when it returns.

use super::fs::{mount_why, ImageOpts, Target};
use crate::error::{CliError, CliResult};
use crate::size::parse_nonzero_size;
use clap::Args;
use oxblob_bdev::BdevError;
use oxblob_blobfs::{BlobFs, MountOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `mount` waits for the background process to mount, and `umount` for it to exit.
const WAIT: Duration = Duration::from_secs(60);

/// `oxblob mount`.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// Serve in this process until unmounted or interrupted (SIGINT/SIGTERM unmount cleanly).
    #[arg(long)]
    pub foreground: bool,
    /// Let other users use the mount (FUSE `allow_other`; the fixed modes 0644/0755 apply).
    #[arg(long)]
    pub allow_other: bool,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// Without the kernel's write-back cache: every `write(2)` reaches blobfs before it
    /// returns (slower; `fsync` is durable either way).
    #[arg(long)]
    pub no_writeback_cache: bool,
    /// Memory bound of blobfs's data cache (e.g. 256MiB; 0 disables it). Default: blobfs's
    /// default (64 MiB).
    #[arg(long, value_name = "SIZE")]
    pub cache_size: Option<String>,
    /// IMAGE MOUNTPOINT (MOUNTPOINT alone with --config/--bdev).
    #[arg(value_name = "IMAGE MOUNTPOINT")]
    pub args: Vec<String>,
}

/// `oxblob umount`.
#[derive(Args, Debug)]
pub struct UmountArgs {
    /// Where an image is mounted.
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
}

/// Runs `oxblob mount`.
pub fn run_mount(a: MountArgs) -> CliResult<()> {
    let image = a.image.clone();
    let t = Target::new(
        "mount",
        a.image.clone(),
        a.args.clone(),
        1,
        1,
        "IMAGE MOUNTPOINT [--foreground]",
    )?;
    let mp = PathBuf::from(&t.rest[0]);
    let what = format!("mount {}", t.name);
    let cache_bytes = match &a.cache_size {
        Some(c) if c.trim() == "0" => 0,
        Some(c) => {
            parse_nonzero_size(c).map_err(|e| CliError::new(format!("{what}: --cache-size"), e))?
        }
        None => MountOptions::default().cache_bytes,
    };
    oxblob_fuse::check_mountpoint(&mp).map_err(|e| CliError::new(&what, e))?;
    if a.foreground {
        foreground(&t, &mp, &a, cache_bytes, &what)
    } else {
        background(&t, &image, &mp, &a, cache_bytes, &what)
    }
}

/// The mount's source as shown by `df`: the image file's absolute path, else the spec.
fn source_of(t: &Target) -> String {
    match &t.dev.dev {
        Some(spec) => match oxblob_fuse::image_file(spec) {
            Some(p) => p
                .canonicalize()
                .map_or_else(|_| spec.clone(), |p| p.display().to_string()),
            None => spec.clone(),
        },
        None => format!("oxblob:{}", t.name),
    }
}

fn foreground(t: &Target, mp: &Path, a: &MountArgs, cache_bytes: u64, what: &str) -> CliResult<()> {
    let dev = match t.dev.open() {
        Ok(d) => d,
        Err(e) => return Err(open_error(t, e, what)),
    };
    let fs = BlobFs::mount(
        dev,
        MountOptions {
            read_only: false,
            cache_bytes,
        },
    )
    .map_err(|e| CliError::new(what, mount_why(&e)))?;
    let cfg = oxblob_fuse::MountConfig {
        allow_other: a.allow_other,
        threads: usize::from(a.threads),
        source: source_of(t),
        read_only: false,
        writeback_cache: !a.no_writeback_cache,
    };
    let name = t.name.clone();
    oxblob_fuse::run(fs, mp, &cfg, |mp| {
        println!("oxblob: mounted {name} at {}", mp.display());
    })
    .map_err(|e| CliError::new(what, e))
}

/// Rewrites "image in use" into `IMAGE is in use ...` and keeps other errors as they are.
fn open_error(t: &Target, e: CliError, what: &str) -> CliError {
    let in_use = BdevError::InUse {
        path: String::new(),
    }
    .to_string();
    // The bdev's message is "<path> is in use: ..."; match its fixed tail.
    let tail = in_use.trim_start();
    if e.why.ends_with(tail) {
        return CliError::new(
            what,
            format!(
                "{} is in use (already mounted, or open in another oxblob process)",
                t.name
            ),
        );
    }
    CliError::new(what, e.why)
}

fn background(
    t: &Target,
    image: &ImageOpts,
    mp: &Path,
    a: &MountArgs,
    cache_bytes: u64,
    what: &str,
) -> CliResult<()> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(what, format!("cannot find the oxblob executable: {e}")))?;
    let log = std::env::temp_dir().join(format!(
        "oxblob-mount-{}-{}.log",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let logf = std::fs::File::create(&log)
        .map_err(|e| CliError::new(what, format!("creating {}: {e}", log.display())))?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount").arg("--foreground");
    if let (Some(c), Some(b)) = (&image.config, &image.bdev) {
        cmd.arg("--config").arg(c).arg("--bdev").arg(b);
    } else if let Some(spec) = &t.dev.dev {
        cmd.arg(spec);
    }
    cmd.arg(mp);
    cmd.arg("--threads").arg(a.threads.to_string());
    cmd.arg("--cache-size").arg(cache_bytes.to_string());
    if a.allow_other {
        cmd.arg("--allow-other");
    }
    if a.no_writeback_cache {
        cmd.arg("--no-writeback-cache");
    }
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(logf));
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::new(what, format!("starting the mount process: {e}")))?;
    let start = Instant::now();
    let result = loop {
        if oxblob_fuse::is_mounted(mp) {
            println!(
                "oxblob: mounted {} at {} (pid {})",
                t.name,
                mp.canonicalize()
                    .unwrap_or_else(|_| mp.to_path_buf())
                    .display(),
                child.id()
            );
            break Ok(());
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let text = text.trim();
                // The child already said "oxblob: mount IMAGE: why": pass "why" on.
                let prefix = format!("oxblob: {what}: ");
                let why = text
                    .lines()
                    .rev()
                    .find_map(|l| l.strip_prefix(&prefix))
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        if text.is_empty() {
                            format!("the mount process exited ({status})")
                        } else {
                            text.to_string()
                        }
                    });
                break Err(CliError::new(what, why));
            }
            Ok(None) => {}
            Err(e) => break Err(CliError::new(what, e)),
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            break Err(CliError::new(
                what,
                "timed out waiting for the mount to appear",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&log);
    result
}

/// Runs `oxblob umount`.
pub fn run_umount(a: UmountArgs) -> CliResult<()> {
    let mp = &a.mountpoint;
    let what = format!("umount {}", mp.display());
    let Some(entry) = oxblob_fuse::find_mount(mp) else {
        return Err(CliError::new(what, "not mounted"));
    };
    if !entry.fstype.starts_with("fuse") {
        return Err(CliError::new(
            what,
            format!(
                "not an oxblob mount ({} from {})",
                entry.fstype, entry.source
            ),
        ));
    }
    match oxblob_fuse::unmount_now(&entry.mountpoint) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // Not root: the setuid helper can unmount what this user mounted.
            let st = Command::new("fusermount3")
                .arg("-u")
                .arg(&entry.mountpoint)
                .status()
                .map_err(|e| CliError::new(&what, format!("running fusermount3: {e}")))?;
            if !st.success() {
                return Err(CliError::new(what, format!("fusermount3 -u failed ({st})")));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {
            return Err(CliError::new(what, "target is busy (files are open there)"));
        }
        Err(e) => return Err(CliError::new(what, e)),
    }
    if let Some(img) = oxblob_fuse::image_file(&entry.source) {
        match oxblob_fuse::wait_image_released(&img, WAIT) {
            Ok(true) => {}
            Ok(false) => {
                return Err(CliError::new(
                    what,
                    format!(
                        "unmounted, but {} is still held after {}s",
                        img.display(),
                        WAIT.as_secs()
                    ),
                ))
            }
            Err(e) => return Err(CliError::new(what, format!("{}: {e}", img.display()))),
        }
    }
    Ok(())
}
