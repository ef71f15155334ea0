//! The `oxblob://` URI: which image to mount and how.
//!
//! ```text
//! oxblob://<device>[?<option>&<option>...]
//!
//! <device>  /path/to/image          a bare path: the same as file:/path/to/image
//!           file:/path/to/image     io_uring, falling back to pread/pwrite
//!           psync:/path/to/image    pread/pwrite only
//!           uring:/path/to/image    io_uring only
//!           malloc:1GiB             RAM (formatted on first mount; gone at the last unmount)
//! <option>  key=value or key:value  (RocksDB's option parser splits `--fs_uri` values at `=`,
//!                                    so on the db_bench command line write `key:value`)
//!   mkfs=1        create and format the image if the file does not exist
//!   size=SIZE     size of an image created by mkfs (default 4GiB; K/M/G/T binary suffixes)
//!   cluster=SIZE  blobfs cluster size for mkfs (default 1MiB)
//!   direct=0|1    O_DIRECT on the image file (default 1 where the host file system allows it)
//!   cache=SIZE    blobfs data cache of the mount (default a quarter of the RAM; 0 = none:
//!                 every read and write goes to the device)
//!   bs=N, qd=N, sqpoll=0|1   passed to the device (see the oxblob-bdev device specs)
//! ```
//!
//! So `oxblob:///var/tmp/db.img`, `oxblob://file:/var/tmp/db.img?mkfs:1&size:8GiB` and
//! `oxblob://psync:/var/tmp/db.img?direct:0` are all valid.

use std::path::PathBuf;

/// The URI scheme (and RocksDB object-registry name) of the plugin.
pub const SCHEME: &str = "oxblob";

/// Default size of an image created by `mkfs=1`.
pub const DEFAULT_MKFS_SIZE: u64 = 4 << 30;

/// Default blobfs cache of a mount made by the plugin: a quarter of the physical memory
/// (256 MiB if that cannot be determined). Memory is taken only as data is cached.
pub fn default_cache_bytes() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib.saturating_mul(1024))
    });
    match total {
        Some(t) if t > 0 => t / 4,
        _ => 256 << 20,
    }
}

/// Where the image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// An image file or block device, with the bdev backend prefix (`file`, `psync`, `uring`).
    File {
        /// `file`, `psync` or `uring`.
        backend: String,
        /// The path as written.
        path: PathBuf,
    },
    /// A RAM device of this many bytes.
    Malloc {
        /// The size as written (for example `1GiB`).
        size: String,
    },
}

/// A parsed `oxblob://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// The device.
    pub device: Device,
    /// Format the image if it does not exist.
    pub mkfs: bool,
    /// Size of an image created by `mkfs`.
    pub size: u64,
    /// Cluster size for `mkfs` (`None`: blobfs's default).
    pub cluster_size: Option<u64>,
    /// `O_DIRECT` on the image (`None`: the device's default, on).
    pub direct: Option<bool>,
    /// The mount's blobfs cache bound (`cache=`; default [`default_cache_bytes`]).
    pub cache_bytes: u64,
    /// Other device options (`bs`, `qd`, `sqpoll`) passed through to the device spec.
    pub device_options: Vec<(String, String)>,
}

/// A URI that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad oxblob URI {uri:?}: {reason}")]
pub struct UriError {
    /// The URI.
    pub uri: String,
    /// What is wrong.
    pub reason: String,
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

impl Uri {
    /// Parses `oxblob://...` (see the module documentation).
    pub fn parse(uri: &str) -> Result<Uri, UriError> {
        let err = |reason: String| UriError {
            uri: uri.to_string(),
            reason,
        };
        let rest = uri
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix("://"))
            .ok_or_else(|| err(format!("must start with {SCHEME}://")))?;
        let (dev, opts) = match rest.split_once('?') {
            Some((d, o)) => (d, o),
            None => (rest, ""),
        };
        if dev.is_empty() {
            return Err(err("no device or image path after oxblob://".to_string()));
        }
        let device = if let Some(size) = dev.strip_prefix("malloc:") {
            Device::Malloc {
                size: size.to_string(),
            }
        } else {
            let (backend, path) = match dev.split_once(':') {
                Some((b @ ("file" | "psync" | "uring"), p)) => (b, p),
                Some((b, _)) if !b.contains('/') => {
                    return Err(err(format!(
                        "unknown device kind {b:?} (file:, psync:, uring:, malloc: or a path)"
                    )))
                }
                _ => ("file", dev),
            };
            if !path.starts_with('/') {
                return Err(err(format!("image path {path:?} must be absolute")));
            }
            Device::File {
                backend: backend.to_string(),
                path: PathBuf::from(path),
            }
        };
        let mut u = Uri {
            device,
            mkfs: false,
            size: DEFAULT_MKFS_SIZE,
            cluster_size: None,
            direct: None,
            cache_bytes: default_cache_bytes(),
            device_options: Vec::new(),
        };
        for kv in opts.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once(['=', ':'])
                .ok_or_else(|| err(format!("option {kv:?} is not key=value")))?;
            let bad = |what: &str| err(format!("option {k}: {v:?} is not {what}"));
            match k {
                "mkfs" => u.mkfs = parse_bool(v).ok_or_else(|| bad("0 or 1"))?,
                "direct" => u.direct = Some(parse_bool(v).ok_or_else(|| bad("0 or 1"))?),
                "size" => {
                    u.size = oxblob_bdev::spec::parse_size(v).map_err(|_| bad("a size"))?;
                }
                "cache" => {
                    u.cache_bytes = oxblob_bdev::spec::parse_size(v).map_err(|_| bad("a size"))?;
                }
                "cluster" => {
                    u.cluster_size =
                        Some(oxblob_bdev::spec::parse_size(v).map_err(|_| bad("a size"))?);
                }
                "bs" | "qd" | "sqpoll" => u.device_options.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(err(format!(
                        "unknown option {k:?} (mkfs, size, cluster, direct, cache, bs, qd, sqpoll)"
                    )))
                }
            }
        }
        Ok(u)
    }

    /// The `oxblob-bdev` device spec to open (without `create=`).
    pub fn device_spec(&self) -> String {
        let mut opts: Vec<String> = self
            .device_options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if let Some(d) = self.direct {
            opts.push(format!("direct={}", u8::from(d)));
        }
        let base = match &self.device {
            Device::File { backend, path } => format!("{backend}:{}", path.display()),
            Device::Malloc { size } => format!("malloc:{size}"),
        };
        if opts.is_empty() {
            base
        } else {
            format!("{base}?{}", opts.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_specs_and_options() {
        let u = Uri::parse("oxblob:///var/tmp/x.img").unwrap();
        assert_eq!(
            u.device,
            Device::File {
                backend: "file".into(),
                path: "/var/tmp/x.img".into()
            }
        );
        assert!(!u.mkfs);
        assert_eq!(u.device_spec(), "file:/var/tmp/x.img");
        let u = Uri::parse("oxblob://psync:/a/b?mkfs:1&size:8GiB&direct=0&bs=512").unwrap();
        assert!(u.mkfs);
        assert_eq!(u.size, 8 << 30);
        assert_eq!(u.device_spec(), "psync:/a/b?bs=512&direct=0");
        assert_eq!(u.cache_bytes, default_cache_bytes());
        assert!(u.cache_bytes > 0);
        let u = Uri::parse("oxblob:///a?cache=0").unwrap();
        assert_eq!(u.cache_bytes, 0);
        let u = Uri::parse("oxblob:///a?cache:512MiB").unwrap();
        assert_eq!(u.cache_bytes, 512 << 20);
        let u = Uri::parse("oxblob://malloc:64MiB").unwrap();
        assert_eq!(
            u.device,
            Device::Malloc {
                size: "64MiB".into()
            }
        );
    }

    #[test]
    fn rejects_bad_uris() {
        for bad in [
            "posix:///x",
            "oxblob:/x",
            "oxblob://",
            "oxblob://relative/x.img",
            "oxblob://nvme:/x",
            "oxblob:///x?bogus=1",
            "oxblob:///x?mkfs=maybe",
            "oxblob:///x?size=lots",
            "oxblob:///x?mkfs",
            "oxblob:///x?cache=big",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad} parsed");
        }
    }
}
