//! SPDK-style JSON bdev configs.
//!
//! The format is SPDK's `--json` config: subsystems, of which only `"bdev"` is read; its
//! `config` array lists method calls executed in order:
//!
//! ```json
//! {"subsystems":[{"subsystem":"bdev","config":[
//!   {"method":"bdev_malloc_create","params":{"name":"Malloc0","num_blocks":262144,"block_size":4096}},
//!   {"method":"bdev_aio_create","params":{"name":"AIO0","filename":"/tmp/x.img","block_size":4096}},
//!   {"method":"bdev_uring_create","params":{"name":"Uring0","filename":"/dev/loop0","block_size":512}},
//!   {"method":"bdev_wait_for_examine"}
//! ]}]}
//! ```
//!
//! - `bdev_malloc_create` {name, num_blocks, block_size} makes a [`crate::MallocDevice`].
//! - `bdev_aio_create` {name, filename, block_size?} opens the file with the same backend as a
//!   `file:` spec: **io_uring, or pread/pwrite where io_uring is unavailable** (we have no libaio
//!   backend; io_uring is its successor, and both use `O_DIRECT` where possible).
//! - `bdev_uring_create` {name, filename, block_size?} opens the file with io_uring only.
//!
//! Other subsystems are ignored, and so are the bdev methods that only set options
//! ([`IGNORED_METHODS`]). Any other bdev method is an error, as is a missing or mistyped
//! parameter or a name used twice. Extra SPDK parameters (`uuid`, `readonly`, ...) are ignored.
//! The opened device's `info().name` is the bdev name. Devices are opened only when asked for
//! by [`open_from_config`], never all at once.

use crate::psync::FileOptions;
use crate::spec::open_auto;
use crate::uring::UringDevice;
use crate::{BdevError, BlockDevice, MallocDevice};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bdev methods that only set options and are accepted and ignored.
pub const IGNORED_METHODS: &[&str] = &[
    "bdev_set_options",
    "bdev_wait_for_examine",
    "bdev_examine",
    "bdev_nvme_set_options",
    "bdev_nvme_set_hotplug",
    "bdev_raid_set_options",
    "bdev_iscsi_set_options",
    "bdev_aio_set_options",
    "bdev_iobuf_set_options",
    "bdev_enable_histogram",
];

/// What one bdev-creating method in a config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BdevKind {
    /// `bdev_malloc_create`.
    Malloc {
        /// Number of blocks.
        num_blocks: u64,
        /// Block size in bytes.
        block_size: u32,
    },
    /// `bdev_aio_create`: io_uring with a pread/pwrite fallback.
    Aio {
        /// The file or block device.
        filename: PathBuf,
        /// Block size; default as for a `file:` spec.
        block_size: Option<u32>,
    },
    /// `bdev_uring_create`: io_uring only.
    Uring {
        /// The file or block device.
        filename: PathBuf,
        /// Block size; default as for a `uring:` spec.
        block_size: Option<u32>,
    },
}

/// One bdev defined in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BdevConfig {
    /// The bdev name.
    pub name: String,
    /// What to open.
    pub kind: BdevKind,
}

impl BdevConfig {
    /// Opens this bdev.
    pub fn open(&self) -> Result<Arc<dyn BlockDevice>, BdevError> {
        match &self.kind {
            BdevKind::Malloc {
                num_blocks,
                block_size,
            } => Ok(Arc::new(MallocDevice::new(
                &self.name,
                *block_size,
                *num_blocks,
            )?)),
            BdevKind::Aio {
                filename,
                block_size,
            } => open_auto(filename, &self.file_options(*block_size)),
            BdevKind::Uring {
                filename,
                block_size,
            } => Ok(Arc::new(UringDevice::open(
                filename,
                &self.file_options(*block_size),
            )?)),
        }
    }

    fn file_options(&self, block_size: Option<u32>) -> FileOptions {
        FileOptions {
            block_size,
            name: Some(self.name.clone()),
            ..FileOptions::default()
        }
    }
}

fn err(msg: String) -> BdevError {
    BdevError::Config(msg)
}

struct Params<'a> {
    method: &'a str,
    origin: &'a str,
    obj: Option<&'a serde_json::Map<String, Value>>,
}

impl Params<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.and_then(|o| o.get(key)).filter(|v| !v.is_null())
    }

    fn missing(&self, key: &str) -> BdevError {
        err(format!(
            "{} in config {} is missing parameter '{key}'",
            self.method, self.origin
        ))
    }

    fn mistyped(&self, key: &str, want: &str) -> BdevError {
        err(format!(
            "{} in config {}: parameter '{key}' must be {want}",
            self.method, self.origin
        ))
    }

    fn string(&self, key: &str) -> Result<String, BdevError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        match v.as_str() {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(self.mistyped(key, "a non-empty string")),
        }
    }

    fn u64_opt(&self, key: &str) -> Result<Option<u64>, BdevError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.mistyped(key, "a non-negative integer")),
        }
    }

    fn u64(&self, key: &str) -> Result<u64, BdevError> {
        self.u64_opt(key)?.ok_or_else(|| self.missing(key))
    }

    fn block_size_opt(&self) -> Result<Option<u32>, BdevError> {
        match self.u64_opt("block_size")? {
            None => Ok(None),
            Some(b) => u32::try_from(b)
                .ok()
                .filter(|b| (512..=65536).contains(b) && b.is_power_of_two())
                .map(Some)
                .ok_or_else(|| self.mistyped("block_size", "a power of two from 512 to 65536")),
        }
    }
}

/// Parses a config held in a string.
pub fn parse_config(text: &str) -> Result<Vec<BdevConfig>, BdevError> {
    parse_config_from(text, "(inline)")
}

/// Parses a config; `origin` (usually its path) is named in error messages.
pub fn parse_config_from(text: &str, origin: &str) -> Result<Vec<BdevConfig>, BdevError> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| err(format!("config {origin} is not valid JSON: {e}")))?;
    let subsystems = root
        .get("subsystems")
        .and_then(Value::as_array)
        .ok_or_else(|| err(format!("config {origin} has no \"subsystems\" array")))?;
    let mut out: Vec<BdevConfig> = Vec::new();
    for sub in subsystems {
        if sub.get("subsystem").and_then(Value::as_str) != Some("bdev") {
            continue;
        }
        let calls = match sub.get("config") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(err(format!(
                    "config {origin}: the bdev subsystem's \"config\" must be an array"
                )))
            }
        };
        for call in calls {
            let method = call.get("method").and_then(Value::as_str).ok_or_else(|| {
                err(format!(
                    "config {origin}: a bdev config entry has no \"method\" string"
                ))
            })?;
            let obj = match call.get("params") {
                None | Some(Value::Null) => None,
                Some(Value::Object(o)) => Some(o),
                Some(_) => {
                    return Err(err(format!(
                        "{method} in config {origin}: \"params\" must be an object"
                    )))
                }
            };
            let p = Params {
                method,
                origin,
                obj,
            };
            let bdev = match method {
                "bdev_malloc_create" => {
                    let block_size = p.block_size_opt()?.ok_or_else(|| p.missing("block_size"))?;
                    let num_blocks = p.u64("num_blocks")?;
                    if num_blocks == 0 {
                        return Err(p.mistyped("num_blocks", "at least 1"));
                    }
                    BdevConfig {
                        name: p.string("name")?,
                        kind: BdevKind::Malloc {
                            num_blocks,
                            block_size,
                        },
                    }
                }
                "bdev_aio_create" => BdevConfig {
                    name: p.string("name")?,
                    kind: BdevKind::Aio {
                        filename: PathBuf::from(p.string("filename")?),
                        block_size: p.block_size_opt()?,
                    },
                },
                "bdev_uring_create" => BdevConfig {
                    name: p.string("name")?,
                    kind: BdevKind::Uring {
                        filename: PathBuf::from(p.string("filename")?),
                        block_size: p.block_size_opt()?,
                    },
                },
                m if IGNORED_METHODS.contains(&m) => continue,
                m => {
                    return Err(err(format!(
                        "unsupported bdev method '{m}' in config {origin}"
                    )))
                }
            };
            if out.iter().any(|b| b.name == bdev.name) {
                return Err(err(format!(
                    "bdev name '{}' is defined twice in config {origin}",
                    bdev.name
                )));
            }
            out.push(bdev);
        }
    }
    Ok(out)
}

/// Reads the config at `path` and opens the bdev called `bdev_name`.
///
/// Errors: [`BdevError::Open`] if the file cannot be read; [`BdevError::Config`] if it cannot be
/// parsed or has no bdev of that name (the message lists the names it has).
pub fn open_from_config(path: &Path, bdev_name: &str) -> Result<Arc<dyn BlockDevice>, BdevError> {
    let text = std::fs::read_to_string(path).map_err(|e| BdevError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let origin = path.display().to_string();
    let bdevs = parse_config_from(&text, &origin)?;
    match bdevs.iter().find(|b| b.name == bdev_name) {
        Some(b) => b.open(),
        None => {
            let names: Vec<&str> = bdevs.iter().map(|b| b.name.as_str()).collect();
            Err(err(format!(
                "no bdev named '{bdev_name}' in config {origin} (it defines: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )))
        }
    }
}
