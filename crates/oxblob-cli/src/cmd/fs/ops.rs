//! The operations behind the file-system commands and the shell, on a mounted [`BlobFs`].
//! Each writes its output to the given writer and returns a [`CliError`] that names the
//! operation and the path (`cannot remove '/a': Directory not empty`).

use super::{fs_err, line, to_json};
use crate::error::{CliError, CliResult};
use crate::size::format_size;
use indicatif::{ProgressBar, ProgressStyle};
use oxblob_blobfs::{components, BlobFs, FileType, FsError, FsErrorKind, Metadata, OpenFlags};
use serde_json::json;
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

/// Bytes moved per read or write when copying (files are streamed, never held whole).
pub const COPY_CHUNK: usize = 4 << 20;
/// Copies of at least this many bytes show a progress bar (when stderr is a terminal).
pub const PROGRESS_MIN: u64 = 32 << 20;

/// Directory entries `ls` asks blobfs for per call.
const LS_PAGE: usize = 1024;

/// The canonical form of an absolute image path (`.`, `..`, repeated `/` resolved).
pub fn normalize(path: &str) -> Result<String, FsError> {
    let c = components(path)?;
    Ok(format!("/{}", c.join("/")))
}

/// `path` resolved against the directory `cwd` (both give canonical absolute paths).
pub fn resolve(cwd: &str, path: &str) -> Result<String, FsError> {
    if path.starts_with('/') {
        normalize(path)
    } else {
        normalize(&format!("{cwd}/{path}"))
    }
}

/// Joins a directory and an entry name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The last component of an image path (`""` for the root).
pub fn basename(path: &str) -> String {
    components(path)
        .ok()
        .and_then(|c| c.last().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// UTC time of `ns` since the epoch as `YYYY-MM-DD HH:MM:SS`.
pub fn format_time(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn type_char(k: FileType) -> char {
    match k {
        FileType::Dir => 'd',
        FileType::File => '-',
    }
}

fn long_line(m: &Metadata, name: &str) -> String {
    format!(
        "{} {:>12} {} {:>8} {name}",
        type_char(m.kind),
        m.size,
        format_time(m.mtime_ns),
        m.ino
    )
}

/// `ls [-l] [-R] PATH`.
pub fn ls(
    fs: &BlobFs,
    out: &mut dyn Write,
    path: &str,
    long: bool,
    recursive: bool,
) -> CliResult<()> {
    let m = fs
        .stat(path)
        .map_err(|e| fs_err("cannot access", path, &e))?;
    if m.kind == FileType::File {
        return line(
            out,
            &if long {
                long_line(&m, path)
            } else {
                path.to_string()
            },
        );
    }
    let mut pending = vec![path.to_string()];
    let mut first = true;
    while let Some(dir) = pending.pop() {
        if recursive {
            if !first {
                line(out, "")?;
            }
            line(out, &format!("{dir}:"))?;
        }
        first = false;
        // The directory in pages (a name cursor: each call costs O(log n + page), and an
        // entry present throughout the listing is printed exactly once).
        let mut subdirs = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let entries = fs
                .readdir_from(&dir, after.as_deref(), LS_PAGE)
                .map_err(|e| fs_err("cannot open directory", &dir, &e))?;
            let Some(last) = entries.last() else { break };
            after = Some(last.name.clone());
            for e in &entries {
                let p = join(&dir, &e.name);
                if long {
                    let m = fs.stat(&p).map_err(|er| fs_err("cannot access", &p, &er))?;
                    line(out, &long_line(&m, &e.name))?;
                } else {
                    line(out, &e.name)?;
                }
                if recursive && e.kind == FileType::Dir {
                    subdirs.push(p);
                }
            }
        }
        // Visit subdirectories in name order: push them reversed on the stack.
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// `tree PATH`: the subtree drawn with box characters, then a count.
pub fn tree(fs: &BlobFs, out: &mut dyn Write, path: &str) -> CliResult<()> {
    let m = fs
        .stat(path)
        .map_err(|e| fs_err("cannot access", path, &e))?;
    line(out, path)?;
    let (mut dirs, mut files) = (0u64, 0u64);
    if m.kind == FileType::Dir {
        tree_rec(fs, out, path, "", &mut dirs, &mut files)?;
    }
    line(out, "")?;
    line(
        out,
        &format!(
            "{dirs} director{}, {files} file{}",
            if dirs == 1 { "y" } else { "ies" },
            if files == 1 { "" } else { "s" }
        ),
    )
}

fn tree_rec(
    fs: &BlobFs,
    out: &mut dyn Write,
    dir: &str,
    prefix: &str,
    dirs: &mut u64,
    files: &mut u64,
) -> CliResult<()> {
    let entries = fs
        .readdir(dir)
        .map_err(|e| fs_err("cannot open directory", dir, &e))?;
    let n = entries.len();
    for (i, e) in entries.iter().enumerate() {
        let last = i + 1 == n;
        line(
            out,
            &format!("{prefix}{}{}", if last { "└── " } else { "├── " }, e.name),
        )?;
        if e.kind == FileType::Dir {
            *dirs += 1;
            let p = format!("{prefix}{}", if last { "    " } else { "│   " });
            tree_rec(fs, out, &join(dir, &e.name), &p, dirs, files)?;
        } else {
            *files += 1;
        }
    }
    Ok(())
}

/// `mkdir [-p] PATH`.
pub fn mkdir(fs: &BlobFs, path: &str, parents: bool) -> CliResult<()> {
    let r = if parents {
        fs.mkdir_all(path)
    } else {
        fs.mkdir(path).map(|_| ())
    };
    r.map_err(|e| fs_err("cannot create directory", path, &e))
}

/// `cat PATH`: streams the file to `out`.
pub fn cat(fs: &BlobFs, out: &mut dyn Write, path: &str) -> CliResult<()> {
    let h = fs
        .open(path, OpenFlags::read())
        .map_err(|e| fs_err("cannot open", path, &e))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut off = 0u64;
    loop {
        let n = h
            .read_at(off, &mut buf)
            .map_err(|e| fs_err("cannot read", path, &e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| CliError::new("writing the output", e))?;
        off += n as u64;
    }
    h.close().map_err(|e| fs_err("cannot close", path, &e))
}

/// `rm [-r] PATH`: a file, an empty directory, or (with `recursive`) a whole subtree.
pub fn rm(fs: &BlobFs, path: &str, recursive: bool) -> CliResult<()> {
    let m = fs
        .stat(path)
        .map_err(|e| fs_err("cannot remove", path, &e))?;
    if m.kind == FileType::File {
        return fs
            .unlink(path)
            .map_err(|e| fs_err("cannot remove", path, &e));
    }
    if path == "/" {
        return Err(CliError::new(
            "cannot remove '/'",
            "Invalid argument (refusing to remove the root directory)",
        ));
    }
    if recursive {
        for e in fs
            .readdir(path)
            .map_err(|e| fs_err("cannot remove", path, &e))?
        {
            rm(fs, &join(path, &e.name), true)?;
        }
    }
    fs.rmdir(path)
        .map_err(|e| fs_err("cannot remove", path, &e))
}

/// `mv SRC DST`: into DST when it is an existing directory, else to DST.
pub fn mv(fs: &BlobFs, src: &str, dst: &str) -> CliResult<()> {
    let what = |e: &FsError| {
        let mut c = fs_err("cannot move", src, e);
        c.what = format!("cannot move '{src}' to '{dst}'");
        c
    };
    fs.stat(src).map_err(|e| what(&e))?;
    let target = match fs.stat(dst) {
        Ok(m) if m.kind == FileType::Dir && dst != src => join(dst, &basename(src)),
        _ => dst.to_string(),
    };
    fs.rename(src, &target).map_err(|e| {
        let mut c = fs_err("cannot move", src, &e);
        c.what = format!("cannot move '{src}' to '{target}'");
        c
    })
}

fn kind_name(k: FileType) -> &'static str {
    match k {
        FileType::File => "file",
        FileType::Dir => "directory",
    }
}

/// `stat PATH [--json]`.
pub fn stat(fs: &BlobFs, out: &mut dyn Write, path: &str, json: bool) -> CliResult<()> {
    let m = fs.stat(path).map_err(|e| fs_err("cannot stat", path, &e))?;
    if json {
        return line(
            out,
            &to_json(&json!({
                "path": path,
                "type": kind_name(m.kind),
                "ino": m.ino,
                "size": m.size,
                "allocated_bytes": m.allocated_bytes,
                "mtime_ns": m.mtime_ns,
                "ctime_ns": m.ctime_ns,
            }))?,
        );
    }
    let text = format!(
        "  Path: {path}\n  Type: {}\n  Size: {}\nAlloc.: {}\n Inode: {}\nModify: {} UTC\nChange: {} UTC",
        if m.kind == FileType::Dir { "directory" } else { "regular file" },
        m.size,
        m.allocated_bytes,
        m.ino,
        format_time(m.mtime_ns),
        format_time(m.ctime_ns)
    );
    line(out, &text)
}

/// `df [--json]`.
pub fn df(fs: &BlobFs, out: &mut dyn Write, name: &str, json: bool) -> CliResult<()> {
    let s = fs
        .statfs()
        .map_err(|e| fs_err("cannot read the usage of", name, &e))?;
    let used = s.total_bytes.saturating_sub(s.free_bytes);
    if json {
        return line(
            out,
            &to_json(&json!({
                "image": name,
                "total_bytes": s.total_bytes,
                "used_bytes": used,
                "free_bytes": s.free_bytes,
                "files": s.files,
                "cluster_size": s.cluster_size,
                "metadata_used_bytes": s.md_used_bytes,
                "metadata_limit_bytes": s.md_limit_bytes,
            }))?,
        );
    }
    let pct = |used: u64, total: u64| {
        if total == 0 {
            0
        } else {
            (used * 100).div_ceil(total).min(100)
        }
    };
    line(
        out,
        &format!(
            "{:<24} {:>10} {:>10} {:>10} {:>5} {:>10} {:>5}",
            "Filesystem", "Size", "Used", "Free", "Use%", "Files", "Meta%"
        ),
    )?;
    line(
        out,
        &format!(
            "{:<24} {:>10} {:>10} {:>10} {:>4}% {:>10} {:>4}%",
            name,
            format_size(s.total_bytes),
            format_size(used),
            format_size(s.free_bytes),
            pct(used, s.total_bytes),
            s.files,
            pct(s.md_used_bytes, s.md_limit_bytes)
        ),
    )
}

/// One end of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A path on the host.
    Host(PathBuf),
    /// A canonical absolute path inside the image.
    Image(String),
}

impl Endpoint {
    fn show(&self) -> String {
        match self {
            Endpoint::Host(p) => p.display().to_string(),
            Endpoint::Image(p) => format!(":{p}"),
        }
    }

    fn name(&self) -> String {
        match self {
            Endpoint::Host(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Endpoint::Image(p) => basename(p),
        }
    }

    fn child(&self, name: &str) -> Endpoint {
        match self {
            Endpoint::Host(p) => Endpoint::Host(p.join(name)),
            Endpoint::Image(p) => Endpoint::Image(join(p, name)),
        }
    }

    /// `Some(true)` directory, `Some(false)` file, `None` missing.
    fn kind(&self, fs: &BlobFs) -> CliResult<Option<bool>> {
        match self {
            Endpoint::Host(p) => match std::fs::metadata(p) {
                Ok(m) => Ok(Some(m.is_dir())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(host_err("cannot stat", p, &e)),
            },
            Endpoint::Image(p) => match fs.stat(p) {
                Ok(m) => Ok(Some(m.kind == FileType::Dir)),
                Err(e) if e.kind == FsErrorKind::NotFound => Ok(None),
                Err(e) => Err(fs_err("cannot stat", &self.show(), &e)),
            },
        }
    }
}

fn host_err(verb: &str, p: &Path, e: &std::io::Error) -> CliError {
    let why = e.to_string();
    let why = why.split(" (os error").next().unwrap_or(&why).to_string();
    CliError::new(format!("{verb} '{}'", p.display()), why)
}

/// Parses a `cp` operand: `:PATH` is in the image (relative to `cwd`), anything else on the
/// host.
pub fn endpoint(arg: &str, cwd: &str) -> CliResult<Endpoint> {
    match arg.strip_prefix(':') {
        Some(p) => resolve(cwd, if p.is_empty() { "." } else { p })
            .map(Endpoint::Image)
            .map_err(|e| fs_err("invalid path", arg, &e)),
        None => Ok(Endpoint::Host(PathBuf::from(arg))),
    }
}

/// Bytes of the files under `e` (for the progress bar); errors are left to the copy.
fn total_bytes(fs: &BlobFs, e: &Endpoint) -> u64 {
    match e {
        Endpoint::Host(p) => match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|d| total_bytes(fs, &Endpoint::Host(d.path())))
                        .sum()
                })
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        },
        Endpoint::Image(p) => match fs.stat(p) {
            Ok(m) if m.kind == FileType::Dir => fs
                .readdir(p)
                .map(|v| v.iter().map(|d| total_bytes(fs, &e.child(&d.name))).sum())
                .unwrap_or(0),
            Ok(m) => m.size,
            Err(_) => 0,
        },
    }
}

/// `cp [-r] SRC... DST`: at least one side must be in the image. Returns the bytes copied.
/// Shows a progress bar on stderr for large copies when it is a terminal.
/// `dst_is_dir` (DST was written with a trailing `/`) requires DST to be a directory.
pub fn copy(
    fs: &BlobFs,
    srcs: &[Endpoint],
    dst: &Endpoint,
    recursive: bool,
    dst_is_dir: bool,
) -> CliResult<u64> {
    let all_host = srcs.iter().all(|s| matches!(s, Endpoint::Host(_)));
    if all_host && matches!(dst, Endpoint::Host(_)) {
        return Err(CliError::new(
            "cp",
            "at least one of SRC and DST must be inside the image (start it with ':')",
        ));
    }
    let dst_kind = dst.kind(fs)?;
    if dst_is_dir && dst_kind != Some(true) {
        let why = if dst_kind.is_none() {
            "No such file or directory"
        } else {
            "Not a directory"
        };
        return Err(CliError::new(
            format!("cannot copy to '{}/'", dst.show().trim_end_matches('/')),
            why,
        ));
    }
    let dst_dir = dst_kind == Some(true);
    if srcs.len() > 1 && !dst_dir {
        return Err(CliError::new(
            format!("cannot copy to '{}'", dst.show()),
            "Not a directory (several sources need a directory as target)",
        ));
    }
    let total: u64 = srcs.iter().map(|s| total_bytes(fs, s)).sum();
    let bar = (total >= PROGRESS_MIN && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{bytes:>10}/{total_bytes} [{bar:30}] {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    });
    let mut copied = 0;
    for s in srcs {
        let target = if dst_dir {
            dst.child(&s.name())
        } else {
            dst.clone()
        };
        if let (Endpoint::Image(a), Endpoint::Image(b)) = (s, &target) {
            if a == b {
                return Err(CliError::new(
                    format!("cannot copy '{}'", s.show()),
                    format!("'{}' and '{}' are the same file", s.show(), target.show()),
                ));
            }
        }
        copied += copy_one(fs, s, &target, recursive, bar.as_ref())?;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(copied)
}

fn copy_one(
    fs: &BlobFs,
    src: &Endpoint,
    dst: &Endpoint,
    recursive: bool,
    bar: Option<&ProgressBar>,
) -> CliResult<u64> {
    let Some(is_dir) = src.kind(fs)? else {
        return Err(CliError::new(
            format!("cannot stat '{}'", src.show()),
            "No such file or directory",
        ));
    };
    if !is_dir {
        return copy_file(fs, src, dst, bar);
    }
    if !recursive {
        return Err(CliError::new(
            format!("cannot copy '{}'", src.show()),
            "Is a directory (-r not specified; omitting directory)",
        ));
    }
    if let (Endpoint::Image(a), Endpoint::Image(b)) = (src, dst) {
        if b.starts_with(&format!("{a}/")) || a == "/" {
            return Err(CliError::new(
                format!("cannot copy '{}'", src.show()),
                format!("cannot copy a directory into itself, '{}'", dst.show()),
            ));
        }
    }
    match dst.kind(fs)? {
        Some(true) => {}
        Some(false) => {
            return Err(CliError::new(
                format!("cannot overwrite non-directory '{}'", dst.show()),
                "Not a directory",
            ))
        }
        None => match dst {
            Endpoint::Host(p) => {
                std::fs::create_dir(p).map_err(|e| host_err("cannot create directory", p, &e))?
            }
            Endpoint::Image(p) => mkdir(fs, p, false)?,
        },
    }
    let names: Vec<String> = match src {
        Endpoint::Host(p) => {
            let mut v = Vec::new();
            for d in std::fs::read_dir(p).map_err(|e| host_err("cannot open directory", p, &e))? {
                let d = d.map_err(|e| host_err("cannot read directory", p, &e))?;
                v.push(d.file_name().to_string_lossy().into_owned());
            }
            v.sort();
            v
        }
        Endpoint::Image(p) => fs
            .readdir(p)
            .map_err(|e| fs_err("cannot open directory", p, &e))?
            .into_iter()
            .map(|d| d.name)
            .collect(),
    };
    let mut n = 0;
    for name in names {
        n += copy_one(fs, &src.child(&name), &dst.child(&name), true, bar)?;
    }
    Ok(n)
}

/// A source being read: a host file or an image file.
enum Reader {
    Host(File),
    Image(oxblob_blobfs::FileHandle, u64),
}

impl Reader {
    fn read(&mut self, buf: &mut [u8], what: &str) -> CliResult<usize> {
        match self {
            Reader::Host(f) => loop {
                match f.read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(host_err("cannot read", Path::new(what), &e)),
                }
            },
            Reader::Image(h, off) => {
                let n = h
                    .read_at(*off, buf)
                    .map_err(|e| fs_err("cannot read", what, &e))?;
                *off += n as u64;
                Ok(n)
            }
        }
    }
}

fn copy_file(
    fs: &BlobFs,
    src: &Endpoint,
    dst: &Endpoint,
    bar: Option<&ProgressBar>,
) -> CliResult<u64> {
    if dst.kind(fs)? == Some(true) {
        return Err(CliError::new(
            format!("cannot overwrite directory '{}'", dst.show()),
            "Is a directory",
        ));
    }
    let sname = src.show();
    if let Endpoint::Host(p) = src {
        let m = std::fs::metadata(p).map_err(|e| host_err("cannot stat", p, &e))?;
        if !m.is_file() {
            return Err(CliError::new(
                format!("cannot copy '{sname}'"),
                "not a regular file or directory",
            ));
        }
    }
    let mut r = match src {
        Endpoint::Host(p) => {
            Reader::Host(File::open(p).map_err(|e| host_err("cannot open", p, &e))?)
        }
        Endpoint::Image(p) => Reader::Image(
            fs.open(p, OpenFlags::read())
                .map_err(|e| fs_err("cannot open", &sname, &e))?,
            0,
        ),
    };
    let dname = dst.show();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut total = 0u64;
    match dst {
        Endpoint::Host(p) => {
            let mut f = File::create(p).map_err(|e| host_err("cannot create", p, &e))?;
            loop {
                let n = r.read(&mut buf, &sname)?;
                if n == 0 {
                    break;
                }
                f.write_all(&buf[..n])
                    .map_err(|e| host_err("cannot write", p, &e))?;
                total += n as u64;
                if let Some(b) = bar {
                    b.inc(n as u64);
                }
            }
            f.sync_all().map_err(|e| host_err("cannot write", p, &e))?;
        }
        Endpoint::Image(p) => {
            let h = fs
                .open(p, OpenFlags::create_truncate())
                .map_err(|e| fs_err("cannot create", &dname, &e))?;
            loop {
                let n = r.read(&mut buf, &sname)?;
                if n == 0 {
                    break;
                }
                h.write_at(total, &buf[..n])
                    .map_err(|e| fs_err("cannot write", &dname, &e))?;
                total += n as u64;
                if let Some(b) = bar {
                    b.inc(n as u64);
                }
            }
            h.close().map_err(|e| fs_err("cannot write", &dname, &e))?;
        }
    }
    if let Reader::Image(h, _) = r {
        h.close().map_err(|e| fs_err("cannot close", &sname, &e))?;
    }
    Ok(total)
}
