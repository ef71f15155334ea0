//! Device spec strings: one string names a device and how to open it.
//!
//! ```text
//! malloc:1GiB                   RAM device of 1 GiB (block size 4096 unless bs= is given)
//! file:/path/disk.img           io_uring, falling back to pread/pwrite if io_uring is unavailable
//! uring:/dev/loop0              io_uring only (an error if it is unavailable)
//! psync:/path/disk.img          pread/pwrite only
//! /path/disk.img                a bare path (no `kind:` prefix) means `file:`
//! ```
//!
//! Options follow the first `?` as `key=value` pairs separated by `&`:
//!
//! | key      | applies to   | value                                              |
//! |----------|--------------|----------------------------------------------------|
//! | `bs`     | all          | logical block size (a size: `512`, `4K`)           |
//! | `name`   | all          | the bdev name reported by `info().name`            |
//! | `direct` | files        | `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`    |
//! | `create` | files        | create the file if missing and grow it to the size |
//! | `qd`     | uring, file  | ring entries per channel (128..=32768)             |
//! | `sqpoll` | uring, file  | boolean: kernel submission polling                 |
//! | `lock`   | uring, file, psync | boolean: exclusive `flock` on the image (default 1) |
//!
//! For example `file:/x.img?direct=0&bs=512&create=4GiB&name=Foo`. Sizes take an optional
//! binary suffix, case-insensitive: `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/`GiB`,
//! `T`/`TB`/`TiB` (all powers of 1024); a plain number is bytes. A path containing `?` cannot be
//! written as a spec string (use a JSON config, see [`crate::config`]).
//!
//! When `file:` falls back to psync, `oxblob: io_uring unavailable (<reason>); using
//! pread/pwrite` is printed once per process to stderr and logged with `tracing::warn!`.

use crate::psync::{FileOptions, PsyncDevice};
use crate::uring::{uring_unavailable_reason, UringDevice};
use crate::{BdevError, BlockDevice, MallocDevice};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Once};

/// Which backend a file spec asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileBackend {
    /// `file:` — io_uring, or psync where io_uring is unavailable.
    Auto,
    /// `uring:` — io_uring only.
    Uring,
    /// `psync:` — pread/pwrite only.
    Psync,
}

impl FileBackend {
    fn prefix(self) -> &'static str {
        match self {
            FileBackend::Auto => "file",
            FileBackend::Uring => "uring",
            FileBackend::Psync => "psync",
        }
    }
}

/// Options given in a spec string; `None` means "not given" (the caller's default applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecOptions {
    /// `bs=`: logical block size.
    pub block_size: Option<u32>,
    /// `name=`: bdev name.
    pub name: Option<String>,
    /// `direct=`: try `O_DIRECT`.
    pub direct: Option<bool>,
    /// `create=`: create the file with this size.
    pub create_size: Option<u64>,
    /// `qd=`: ring entries per channel.
    pub queue_depth: Option<u32>,
    /// `sqpoll=`: kernel submission polling.
    pub sqpoll: Option<bool>,
    /// `lock=`: take an exclusive lock on the image (default on).
    pub lock: Option<bool>,
}

impl SpecOptions {
    /// `base` with every option given in the spec put over it.
    pub fn apply(&self, base: &FileOptions) -> FileOptions {
        let mut o = base.clone();
        if let Some(v) = self.block_size {
            o.block_size = Some(v);
        }
        if let Some(v) = &self.name {
            o.name = Some(v.clone());
        }
        if let Some(v) = self.direct {
            o.direct = v;
        }
        if let Some(v) = self.create_size {
            o.create_size = Some(v);
        }
        if let Some(v) = self.queue_depth {
            o.queue_depth = v;
        }
        if let Some(v) = self.sqpoll {
            o.sqpoll = v;
        }
        if let Some(v) = self.lock {
            o.lock = v;
        }
        o
    }
}

/// A parsed device spec string. `parse` and `to_string` round-trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `malloc:SIZE`.
    Malloc {
        /// Size in bytes.
        size: u64,
        /// Options (only `bs` and `name` are allowed).
        options: SpecOptions,
    },
    /// `file:PATH`, `uring:PATH`, `psync:PATH` or a bare path.
    File {
        /// Which backend.
        backend: FileBackend,
        /// The file or block device.
        path: PathBuf,
        /// Options.
        options: SpecOptions,
    },
}

const KINDS: &str = "malloc, file, uring, psync";

fn config_err(msg: String) -> BdevError {
    BdevError::Config(msg)
}

/// Parses a size such as `4096`, `4K`, `1GiB`, `512b` (suffixes are powers of 1024,
/// case-insensitive).
pub fn parse_size(text: &str) -> Result<u64, BdevError> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(config_err(format!(
            "invalid size '{text}': expected a number with an optional suffix (B, K, KiB, M, MiB, G, GiB, T, TiB)"
        )));
    }
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(config_err(format!(
                "invalid size '{text}': unknown suffix '{}' (expected B, K, KiB, M, MiB, G, GiB, T, TiB)",
                suffix.trim()
            )))
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| config_err(format!("invalid size '{text}': number too large")))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| config_err(format!("invalid size '{text}': more than 2^64 bytes")))
}

/// Formats a byte count with the largest binary suffix that divides it exactly.
pub fn format_size(bytes: u64) -> String {
    for (shift, suffix) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

fn parse_bool(spec: &str, key: &str, v: &str) -> Result<bool, BdevError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(config_err(format!(
            "invalid value '{v}' for option '{key}' in '{spec}' (expected 0/1, true/false, yes/no, on/off)"
        ))),
    }
}

fn parse_options(spec: &str, text: &str, malloc: bool) -> Result<SpecOptions, BdevError> {
    let mut o = SpecOptions::default();
    for pair in text.split('&') {
        if pair.is_empty() {
            continue;
        }
        let Some((key, value)) = pair.split_once('=') else {
            return Err(config_err(format!(
                "option '{pair}' in '{spec}' has no value (expected key=value)"
            )));
        };
        let file_only = || {
            if malloc {
                Err(config_err(format!(
                    "option '{key}' in '{spec}' does not apply to malloc devices (expected bs, name)"
                )))
            } else {
                Ok(())
            }
        };
        let dup = |set: bool| {
            if set {
                Err(config_err(format!(
                    "option '{key}' given twice in '{spec}'"
                )))
            } else {
                Ok(())
            }
        };
        match key {
            "bs" => {
                dup(o.block_size.is_some())?;
                let bs = parse_size(value)?;
                let bs = u32::try_from(bs)
                    .ok()
                    .filter(|b| (512..=65536).contains(b) && b.is_power_of_two())
                    .ok_or_else(|| {
                        config_err(format!(
                            "block size '{value}' in '{spec}' must be a power of two from 512 to 65536"
                        ))
                    })?;
                o.block_size = Some(bs);
            }
            "name" => {
                dup(o.name.is_some())?;
                if value.is_empty() {
                    return Err(config_err(format!("empty name in '{spec}'")));
                }
                o.name = Some(value.to_string());
            }
            "direct" => {
                file_only()?;
                dup(o.direct.is_some())?;
                o.direct = Some(parse_bool(spec, key, value)?);
            }
            "create" => {
                file_only()?;
                dup(o.create_size.is_some())?;
                o.create_size = Some(parse_size(value)?);
            }
            "qd" => {
                file_only()?;
                dup(o.queue_depth.is_some())?;
                let qd = value
                    .parse::<u32>()
                    .ok()
                    .filter(|q| (128..=32768).contains(q))
                    .ok_or_else(|| {
                        config_err(format!(
                            "queue depth '{value}' in '{spec}' must be a number from 128 to 32768"
                        ))
                    })?;
                o.queue_depth = Some(qd);
            }
            "sqpoll" => {
                file_only()?;
                dup(o.sqpoll.is_some())?;
                o.sqpoll = Some(parse_bool(spec, key, value)?);
            }
            "lock" => {
                file_only()?;
                dup(o.lock.is_some())?;
                o.lock = Some(parse_bool(spec, key, value)?);
            }
            _ => {
                return Err(config_err(format!(
                    "unknown option '{key}' in '{spec}' (expected {})",
                    if malloc {
                        "bs, name"
                    } else {
                        "bs, name, direct, create, qd, sqpoll, lock"
                    }
                )))
            }
        }
    }
    Ok(o)
}

impl FromStr for DeviceSpec {
    type Err = BdevError;

    fn from_str(spec: &str) -> Result<Self, BdevError> {
        if spec.trim().is_empty() {
            return Err(config_err(
                "empty device spec (expected malloc:SIZE, file:PATH, uring:PATH, psync:PATH or a path)"
                    .to_string(),
            ));
        }
        let (body, opts) = match spec.split_once('?') {
            Some((b, o)) => (b, Some(o)),
            None => (spec, None),
        };
        // A `kind:` prefix is a colon before any slash; anything else is a bare path.
        let prefix = body
            .split_once(':')
            .filter(|(k, _)| !k.contains('/') && !k.is_empty());
        let (kind, rest) = match prefix {
            Some((k, r)) => (Some(k), r),
            None => (None, body),
        };
        let backend = match kind {
            Some("malloc") => {
                if rest.is_empty() {
                    return Err(config_err(format!(
                        "missing size in '{spec}' (expected malloc:SIZE, e.g. malloc:1GiB)"
                    )));
                }
                let size = parse_size(rest)?;
                let options = parse_options(spec, opts.unwrap_or(""), true)?;
                return Ok(DeviceSpec::Malloc { size, options });
            }
            Some("file") | None => FileBackend::Auto,
            Some("uring") => FileBackend::Uring,
            Some("psync") => FileBackend::Psync,
            Some(other) => {
                return Err(config_err(format!(
                    "unknown device kind '{other}' in '{spec}' (expected {KINDS})"
                )))
            }
        };
        if rest.is_empty() {
            return Err(config_err(format!("missing path in '{spec}'")));
        }
        Ok(DeviceSpec::File {
            backend,
            path: PathBuf::from(rest),
            options: parse_options(spec, opts.unwrap_or(""), false)?,
        })
    }
}

fn write_options(f: &mut fmt::Formatter<'_>, o: &SpecOptions) -> fmt::Result {
    let mut parts: Vec<String> = Vec::new();
    if let Some(v) = o.block_size {
        parts.push(format!("bs={v}"));
    }
    if let Some(v) = o.direct {
        parts.push(format!("direct={}", u8::from(v)));
    }
    if let Some(v) = o.create_size {
        parts.push(format!("create={}", format_size(v)));
    }
    if let Some(v) = o.queue_depth {
        parts.push(format!("qd={v}"));
    }
    if let Some(v) = o.lock {
        parts.push(format!("lock={}", u8::from(v)));
    }
    if let Some(v) = o.sqpoll {
        parts.push(format!("sqpoll={}", u8::from(v)));
    }
    if let Some(v) = &o.name {
        parts.push(format!("name={v}"));
    }
    if !parts.is_empty() {
        write!(f, "?{}", parts.join("&"))?;
    }
    Ok(())
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Malloc { size, options } => {
                write!(f, "malloc:{}", format_size(*size))?;
                write_options(f, options)
            }
            DeviceSpec::File {
                backend,
                path,
                options,
            } => {
                write!(f, "{}:{}", backend.prefix(), path.display())?;
                write_options(f, options)
            }
        }
    }
}

static FALLBACK_NOTICE: Once = Once::new();

fn note_fallback(reason: &str) {
    FALLBACK_NOTICE.call_once(|| {
        eprintln!("oxblob: io_uring unavailable ({reason}); using pread/pwrite");
        tracing::warn!(reason, "io_uring unavailable; using pread/pwrite");
    });
}

impl DeviceSpec {
    /// Opens the device with default options.
    pub fn open(&self) -> Result<Arc<dyn BlockDevice>, BdevError> {
        self.open_with(&FileOptions::default())
    }

    /// Opens the device; options written in the spec override those in `base`.
    ///
    /// For `malloc:`, `base.block_size` (default 4096) and `base.name` (default `"malloc"`)
    /// apply when the spec does not give them; the rest of `base` is ignored.
    pub fn open_with(&self, base: &FileOptions) -> Result<Arc<dyn BlockDevice>, BdevError> {
        match self {
            DeviceSpec::Malloc { size, options } => {
                let o = options.apply(base);
                let bs = o.block_size.unwrap_or(4096);
                let name = o.name.unwrap_or_else(|| "malloc".to_string());
                if size % u64::from(bs) != 0 {
                    return Err(config_err(format!(
                        "malloc size {size} is not a multiple of the block size {bs}"
                    )));
                }
                Ok(Arc::new(MallocDevice::new(
                    &name,
                    bs,
                    size / u64::from(bs),
                )?))
            }
            DeviceSpec::File {
                backend,
                path,
                options,
            } => {
                let o = options.apply(base);
                match backend {
                    FileBackend::Uring => Ok(Arc::new(UringDevice::open(path, &o)?)),
                    FileBackend::Psync => Ok(Arc::new(PsyncDevice::open(path, &o)?)),
                    FileBackend::Auto => open_auto(path, &o),
                }
            }
        }
    }
}

/// Opens a file with io_uring, or with psync where io_uring is unavailable or
/// `opts.force_psync` is set.
pub(crate) fn open_auto(
    path: &std::path::Path,
    opts: &FileOptions,
) -> Result<Arc<dyn BlockDevice>, BdevError> {
    if opts.force_psync {
        return Ok(Arc::new(PsyncDevice::open(path, opts)?));
    }
    if let Some(reason) = uring_unavailable_reason() {
        note_fallback(&reason);
        return Ok(Arc::new(PsyncDevice::open(path, opts)?));
    }
    Ok(Arc::new(UringDevice::open(path, opts)?))
}

/// Parses `spec` and opens the device with default options.
pub fn open(spec: &str) -> Result<Arc<dyn BlockDevice>, BdevError> {
    spec.parse::<DeviceSpec>()?.open()
}

/// Parses `spec` and opens the device; options written in the spec override those in `opts`
/// (for example `mkfs --size` passes `create_size`).
pub fn open_with(spec: &str, opts: &FileOptions) -> Result<Arc<dyn BlockDevice>, BdevError> {
    spec.parse::<DeviceSpec>()?.open_with(opts)
}
