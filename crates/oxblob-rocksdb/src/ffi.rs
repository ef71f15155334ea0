//! The C ABI, both ways, and the only `unsafe` code of the crate.
//!
//! * Exported (`oxb_*`): called by the C++ `FileSystem` (`cpp/oxblob_fs.cc`). Each returns 0 or
//!   a Linux errno and, on error, a message allocated here (`CString::into_raw`) that the
//!   caller releases with [`oxb_free_string`]. Every body runs under `catch_unwind`: a Rust
//!   panic becomes `EIO` "internal panic", never an unwind across the C ABI.
//! * Imported (`oxbdb_*`): the C++ DB shim (`cpp/oxblob_db.cc`), wrapped in safe functions
//!   for [`crate::db`].
//!
//! The declarations are mirrored in `cpp/oxblob_ffi.h`.
#![allow(unsafe_code)]

use crate::mount::{Error, MountRef, OpenMode, WFile};
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Registers `f` to run at process exit; returns a closure for `Once::call_once`.
pub(crate) fn register_atexit(f: extern "C" fn()) -> impl FnOnce() {
    move || {
        // SAFETY: `f` is a plain `extern "C" fn()` with static lifetime; atexit only stores it.
        unsafe {
            libc::atexit(f);
        }
    }
}

/// Stores `msg` in `*err` (if `err` is not null) and returns `errno`.
fn fail(err: *mut *mut c_char, e: Error) -> c_int {
    if !err.is_null() {
        let msg = CString::new(e.message.replace('\0', " "))
            .unwrap_or_else(|_| CString::from(c"error message unavailable"));
        // SAFETY: `err` is non-null and, per the header contract, points to a writable
        // `char*` owned by the caller.
        unsafe { *err = msg.into_raw() };
    }
    if e.errno == 0 {
        libc::EIO
    } else {
        e.errno
    }
}

/// Runs `f` with panics caught; maps its result to 0 or an errno.
fn guard(err: *mut *mut c_char, f: impl FnOnce() -> Result<(), Error>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => fail(err, e),
        Err(_) => fail(err, Error::new(libc::EIO, "internal panic in oxblob")),
    }
}

/// Borrows a C string argument as UTF-8.
///
/// # Safety
/// `p` must be null or a valid NUL-terminated string that outlives the returned borrow.
unsafe fn cstr<'a>(p: *const c_char) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(Error::new(libc::EINVAL, "null string argument"));
    }
    // SAFETY: non-null and NUL-terminated per this function's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::new(libc::EINVAL, "path is not UTF-8"))
}

/// Borrows the mount behind a handle.
///
/// # Safety
/// `m` must be null or a pointer returned by [`oxb_mount`] and not yet released.
unsafe fn mount<'a>(m: *mut MountRef) -> Result<&'a MountRef, Error> {
    // SAFETY: per the contract, a live `Box<MountRef>` allocation or null.
    unsafe { m.as_ref() }.ok_or_else(|| Error::new(libc::EINVAL, "null mount handle"))
}

/// Borrows the file behind a handle.
///
/// # Safety
/// `f` must be null or a pointer returned by [`oxb_open`] and not yet closed.
unsafe fn file<'a>(f: *mut WFile) -> Result<&'a WFile, Error> {
    // SAFETY: per the contract, a live `Box<WFile>` allocation or null.
    unsafe { f.as_ref() }.ok_or_else(|| Error::new(libc::EINVAL, "null file handle"))
}

/// Releases a message returned through an `err` argument.
#[no_mangle]
pub extern "C" fn oxb_free_string(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: every message handed out was made by `CString::into_raw` in `fail`.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// Mounts (or shares the mount of) the image named by `uri`.
#[no_mangle]
pub extern "C" fn oxb_mount(
    uri: *const c_char,
    out: *mut *mut MountRef,
    err: *mut *mut c_char,
) -> c_int {
    guard(err, || {
        // SAFETY: `uri` is a NUL-terminated string from the caller (header contract).
        let uri = unsafe { cstr(uri) }?;
        if out.is_null() {
            return Err(Error::new(libc::EINVAL, "null out pointer"));
        }
        let m = MountRef::mount(uri)?;
        // SAFETY: `out` is non-null and writable (header contract).
        unsafe { *out = Box::into_raw(Box::new(m)) };
        Ok(())
    })
}

/// Releases a mount reference (the last one unmounts). `m` is invalid afterwards.
#[no_mangle]
pub extern "C" fn oxb_release(m: *mut MountRef, err: *mut *mut c_char) -> c_int {
    guard(err, || {
        if m.is_null() {
            return Ok(());
        }
        // SAFETY: `m` came from `oxb_mount` (Box::into_raw) and is released exactly once.
        let b = unsafe { Box::from_raw(m) };
        b.release()
    })
}

/// Opens a file: mode 0 read, 1 create/truncate for writing, 2 open/create for appending.
#[no_mangle]
pub extern "C" fn oxb_open(
    m: *mut MountRef,
    path: *const c_char,
    mode: c_int,
    out: *mut *mut WFile,
    err: *mut *mut c_char,
) -> c_int {
    guard(err, || {
        // SAFETY: handle and string per the header contract.
        let (m, path) = unsafe { (mount(m)?, cstr(path)?) };
        let mode = match mode {
            0 => OpenMode::Read,
            1 => OpenMode::Truncate,
            2 => OpenMode::Append,
            _ => return Err(Error::new(libc::EINVAL, format!("bad open mode {mode}"))),
        };
        if out.is_null() {
            return Err(Error::new(libc::EINVAL, "null out pointer"));
        }
        let f = WFile::open(m, path, mode)?;
        // SAFETY: `out` is non-null and writable (header contract).
        unsafe { *out = Box::into_raw(Box::new(f)) };
        Ok(())
    })
}

/// Reads up to `len` bytes at `off` into `buf`; `*got` is how many (0 at the end).
#[no_mangle]
pub extern "C" fn oxb_file_read(
    f: *mut WFile,
    off: u64,
    buf: *mut c_char,
    len: usize,
    got: *mut usize,
    err: *mut *mut c_char,
) -> c_int {
    guard(err, || {
        // SAFETY: live handle per the header contract.
        let f = unsafe { file(f) }?;
        if got.is_null() || (buf.is_null() && len > 0) {
            return Err(Error::new(libc::EINVAL, "null buffer"));
        }
        let slice: &mut [u8] = if len == 0 {
            &mut []
        } else {
            // SAFETY: the caller provides `len` writable bytes at `buf` (RocksDB's scratch),
            // not aliased by anything else during the call.
            unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) }
        };
        let n = f.read_at(off, slice)?;
        // SAFETY: `got` is non-null and writable.
        unsafe { *got = n };
        Ok(())
    })
}

/// Borrows `len` bytes at `data`.
///
/// # Safety
/// `data` must point to `len` readable bytes (or `len` must be 0).
unsafe fn bytes<'a>(data: *const c_char, len: usize) -> Result<&'a [u8], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(Error::new(libc::EINVAL, "null data"));
    }
    // SAFETY: per this function's contract.
    Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

/// Appends `len` bytes (buffered; see [`crate::mount::WFile`]).
#[no_mangle]
pub extern "C" fn oxb_file_append(
    f: *mut WFile,
    data: *const c_char,
    len: usize,
    err: *mut *mut c_char,
) -> c_int {
    guard(err, || {
        // SAFETY: live handle and `len` readable bytes per the header contract.
        let (f, d) = unsafe { (file(f)?, bytes(data, len)?) };
        f.append(d)
    })
}

/// Writes `len` bytes at `off`.
#[no_mangle]
pub extern "C" fn oxb_file_write_at(
    f: *mut WFile,
    off: u64,
    data: *const c_char,
    len: usize,
    err: *mut *mut c_char,
) -> c_int {
    guard(err, || {
        // SAFETY: live handle and `len` readable bytes per the header contract.
        let (f, d) = unsafe { (file(f)?, bytes(data, len)?) };
        f.write_at(off, d)
    })
}

/// Writes buffered appends to blobfs (not a durability point).
#[no_mangle]
pub extern "C" fn oxb_file_flush(f: *mut WFile, err: *mut *mut c_char) -> c_int {
    // SAFETY: live handle per the header contract.
    guard(err, || unsafe { file(f) }?.flush())
}

/// Makes the file's data and size durable (blobfs `fdatasync`).
#[no_mangle]
pub extern "C" fn oxb_file_datasync(f: *mut WFile, err: *mut *mut c_char) -> c_int {
    // SAFETY: live handle per the header contract.
    guard(err, || unsafe { file(f) }?.datasync())
}

/// A hint: `[off, off + len)` will be read soon (read into the blobfs cache if it has room).
#[no_mangle]
pub extern "C" fn oxb_file_readahead(
    f: *mut WFile,
    off: u64,
    len: u64,
    err: *mut *mut c_char,
) -> c_int {
    // SAFETY: live handle per the header contract.
    guard(err, || unsafe { file(f) }?.readahead(off, len))
}

/// Makes the file durable.
#[no_mangle]
pub extern "C" fn oxb_file_sync(f: *mut WFile, err: *mut *mut c_char) -> c_int {
    // SAFETY: live handle per the header contract.
    guard(err, || unsafe { file(f) }?.sync())
}

/// Sets the file's size.
#[no_mangle]
pub extern "C" fn oxb_file_truncate(f: *mut WFile, size: u64, err: *mut *mut c_char) -> c_int {
    // SAFETY: live handle per the header contract.
    guard(err, || unsafe { file(f) }?.truncate(size))
}

/// The file's size, buffered appends included (0 for a null handle).
#[no_mangle]
pub extern "C" fn oxb_file_size(f: *mut WFile) -> u64 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: live handle per the header contract.
        unsafe { file(f) }.map_or(0, |f| f.size())
    }))
    .unwrap_or(0)
}

/// Closes and frees the file (even when closing reports an error).
#[no_mangle]
pub extern "C" fn oxb_file_close(f: *mut WFile, err: *mut *mut c_char) -> c_int {
    guard(err, || {
        if f.is_null() {
            return Ok(());
        }
        // SAFETY: `f` came from `oxb_open` (Box::into_raw) and is closed exactly once.
        let mut b = unsafe { Box::from_raw(f) };
        b.close()
    })
}

/// Size, mtime (ns) and whether `path` is a directory.
#[no_mangle]
pub extern "C" fn oxb_stat(
    m: *mut MountRef,
    path: *const c_char,
    size: *mut u64,
    mtime_ns: *mut u64,
    is_dir: *mut c_int,
    err: *mut *mut c_char,
) -> c_int {
    guard(err, || {
        // SAFETY: handle and string per the header contract.
        let (m, path) = unsafe { (mount(m)?, cstr(path)?) };
        let st = m.fs().stat(path)?;
        if size.is_null() || mtime_ns.is_null() || is_dir.is_null() {
            return Err(Error::new(libc::EINVAL, "null out pointer"));
        }
        // SAFETY: all three are non-null and writable (header contract).
        unsafe {
            *size = st.size;
            *mtime_ns = st.mtime_ns;
            *is_dir = c_int::from(st.kind == oxblob_blobfs::FileType::Dir);
        }
        Ok(())
    })
}

/// The names in a directory, `\0`-separated, in a buffer released with [`oxb_free_buf`].
#[no_mangle]
pub extern "C" fn oxb_readdir(
    m: *mut MountRef,
    path: *const c_char,
    names: *mut *mut c_char,
    len: *mut usize,
    err: *mut *mut c_char,
) -> c_int {
    guard(err, || {
        // SAFETY: handle and string per the header contract.
        let (m, path) = unsafe { (mount(m)?, cstr(path)?) };
        if names.is_null() || len.is_null() {
            return Err(Error::new(libc::EINVAL, "null out pointer"));
        }
        let mut buf = Vec::new();
        for e in m.fs().readdir(path)? {
            buf.extend_from_slice(e.name.as_bytes());
            buf.push(0);
        }
        let boxed = buf.into_boxed_slice();
        let n = boxed.len();
        // SAFETY: both out pointers are non-null and writable; the box is released by
        // `oxb_free_buf` with this same length.
        unsafe {
            *len = n;
            *names = Box::into_raw(boxed).cast::<c_char>();
        }
        Ok(())
    })
}

/// Releases a buffer from [`oxb_readdir`].
#[no_mangle]
pub extern "C" fn oxb_free_buf(p: *mut c_char, len: usize) {
    if !p.is_null() {
        let slice = std::ptr::slice_from_raw_parts_mut(p.cast::<u8>(), len);
        // SAFETY: `p`/`len` are exactly what `oxb_readdir` produced from a boxed slice.
        drop(unsafe { Box::from_raw(slice) });
    }
}

/// Generates a path operation: `(mount, path) -> Result<(), Error>`.
macro_rules! path_op {
    ($(#[$doc:meta])* $name:ident, |$m:ident, $p:ident| $body:expr) => {
        $(#[$doc])*
        #[no_mangle]
        pub extern "C" fn $name(
            m: *mut MountRef,
            path: *const c_char,
            err: *mut *mut c_char,
        ) -> c_int {
            guard(err, || {
                // SAFETY: handle and string per the header contract.
                let ($m, $p) = unsafe { (mount(m)?, cstr(path)?) };
                $body
            })
        }
    };
}

path_op!(
    /// Removes a file.
    oxb_unlink,
    |m, p| Ok(m.fs().unlink(p)?)
);
path_op!(
    /// Creates one directory (`EEXIST` if it exists).
    oxb_mkdir,
    |m, p| m.fs().mkdir(p).map(|_| ()).map_err(Error::from)
);
path_op!(
    /// Removes an empty directory.
    oxb_rmdir,
    |m, p| Ok(m.fs().rmdir(p)?)
);
path_op!(
    /// `fsync` of a directory: makes every namespace operation completed before the call
    /// (creates, renames, unlinks, mkdirs — blobfs commits them deferred) durable.
    oxb_fsync_dir,
    |m, p| Ok(m.fs().fsync_dir(p)?)
);
path_op!(
    /// Takes the lock named `path` (`EBUSY` when held).
    oxb_lock,
    |m, p| m.lock_file(p)
);
path_op!(
    /// Releases the lock named `path`.
    oxb_unlock,
    |m, p| m.unlock_file(p)
);

/// Renames `from` to `to` (replacing a file there).
#[no_mangle]
pub extern "C" fn oxb_rename(
    m: *mut MountRef,
    from: *const c_char,
    to: *const c_char,
    err: *mut *mut c_char,
) -> c_int {
    guard(err, || {
        // SAFETY: handle and strings per the header contract.
        let (m, from, to) = unsafe { (mount(m)?, cstr(from)?, cstr(to)?) };
        Ok(m.fs().rename(from, to)?)
    })
}

/// Sets the size of the file at `path`.
#[no_mangle]
pub extern "C" fn oxb_truncate_path(
    m: *mut MountRef,
    path: *const c_char,
    size: u64,
    err: *mut *mut c_char,
) -> c_int {
    guard(err, || {
        // SAFETY: handle and string per the header contract.
        let (m, path) = unsafe { (mount(m)?, cstr(path)?) };
        let h = m.fs().open(path, oxblob_blobfs::OpenFlags::read_write())?;
        h.truncate(size)?;
        Ok(h.close()?)
    })
}

/// The buffer and offset alignment of direct reads on this mount: its io unit when it has no
/// data cache (`cache=0`: reads go to the device, and an aligned one lands in RocksDB's
/// buffer with no copy), else 0 (reads are buffered by blobfs). 0 for a null handle.
#[no_mangle]
pub extern "C" fn oxb_direct_align(m: *mut MountRef) -> usize {
    // SAFETY: live handle per the header contract (or null).
    match unsafe { mount(m) } {
        Ok(m) if m.fs().cache_stats().limit_bytes == 0 => {
            usize::try_from(m.fs().io_unit()).unwrap_or(0)
        }
        _ => 0,
    }
}

/// Free bytes in the image's data region.
#[no_mangle]
pub extern "C" fn oxb_free_space(m: *mut MountRef, free: *mut u64, err: *mut *mut c_char) -> c_int {
    guard(err, || {
        // SAFETY: live handle per the header contract.
        let m = unsafe { mount(m) }?;
        let st = m.fs().statfs()?;
        if free.is_null() {
            return Err(Error::new(libc::EINVAL, "null out pointer"));
        }
        // SAFETY: non-null and writable.
        unsafe { *free = st.free_bytes };
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// The DB shim (cpp/oxblob_db.cc), wrapped in safe types for `crate::db`.

use crate::db::{Error as DbError, Options};
use std::ffi::c_void;
use std::ptr::NonNull;

#[repr(C)]
struct OxbDbOptions {
    create_if_missing: c_int,
    error_if_exists: c_int,
    write_buffer_size: u64,
    target_file_size_base: u64,
    max_bytes_for_level_base: u64,
    disable_auto_compactions: c_int,
    paranoid_checks: c_int,
}

#[repr(C)]
struct OxbStatus {
    code: c_int,
    subcode: c_int,
    msg: *mut c_char,
}

impl OxbStatus {
    fn new() -> Self {
        OxbStatus {
            code: 0,
            subcode: 0,
            msg: std::ptr::null_mut(),
        }
    }

    /// Converts to a result, releasing the message.
    fn into_result(self) -> Result<(), DbError> {
        let msg = if self.msg.is_null() {
            String::new()
        } else {
            // SAFETY: `msg` is a NUL-terminated string malloc'd by the shim (`Dup`).
            let s = unsafe { CStr::from_ptr(self.msg) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: allocated with malloc by the shim; released once here.
            unsafe { oxbdb_free(self.msg.cast::<c_void>()) };
            s
        };
        if self.code == 0 {
            Ok(())
        } else {
            Err(DbError::from_status(self.code, self.subcode, msg))
        }
    }
}

extern "C" {
    fn oxbdb_free(p: *mut c_void);
    fn oxbdb_open(
        fs_uri: *const c_char,
        path: *const c_char,
        o: *const OxbDbOptions,
        st: *mut OxbStatus,
    ) -> *mut c_void;
    fn oxbdb_put(
        db: *mut c_void,
        k: *const u8,
        kl: usize,
        v: *const u8,
        vl: usize,
        sync: c_int,
        st: *mut OxbStatus,
    );
    fn oxbdb_delete(db: *mut c_void, k: *const u8, kl: usize, sync: c_int, st: *mut OxbStatus);
    fn oxbdb_get(
        db: *mut c_void,
        k: *const u8,
        kl: usize,
        val: *mut *mut c_char,
        vl: *mut usize,
        found: *mut c_int,
        st: *mut OxbStatus,
    );
    fn oxbdb_batch_new() -> *mut c_void;
    fn oxbdb_batch_put(b: *mut c_void, k: *const u8, kl: usize, v: *const u8, vl: usize);
    fn oxbdb_batch_delete(b: *mut c_void, k: *const u8, kl: usize);
    fn oxbdb_batch_free(b: *mut c_void);
    fn oxbdb_write(db: *mut c_void, b: *mut c_void, sync: c_int, st: *mut OxbStatus);
    fn oxbdb_flush(db: *mut c_void, st: *mut OxbStatus);
    #[allow(clippy::too_many_arguments)]
    fn oxbdb_compact_range(
        db: *mut c_void,
        b: *const u8,
        bl: usize,
        has_b: c_int,
        e: *const u8,
        el: usize,
        has_e: c_int,
        st: *mut OxbStatus,
    );
    fn oxbdb_property(
        db: *mut c_void,
        name: *const c_char,
        val: *mut *mut c_char,
        vl: *mut usize,
    ) -> c_int;
    fn oxbdb_close(db: *mut c_void, st: *mut OxbStatus);
    fn oxbdb_iter_new(db: *mut c_void) -> *mut c_void;
    fn oxbdb_iter_seek(it: *mut c_void, k: *const u8, kl: usize);
    fn oxbdb_iter_seek_to_first(it: *mut c_void);
    fn oxbdb_iter_next(it: *mut c_void);
    fn oxbdb_iter_valid(it: *mut c_void) -> c_int;
    fn oxbdb_iter_key(it: *mut c_void, k: *mut *const u8, kl: *mut usize);
    fn oxbdb_iter_value(it: *mut c_void, v: *mut *const u8, vl: *mut usize);
    fn oxbdb_iter_status(it: *mut c_void, st: *mut OxbStatus);
    fn oxbdb_iter_free(it: *mut c_void);
}

fn c_string(what: &str, s: &str) -> Result<CString, DbError> {
    CString::new(s).map_err(|_| DbError::invalid(format!("{what} contains a NUL byte")))
}

/// An open RocksDB (`rocksdb::DB*` with its `Env` guard). `Send + Sync`: RocksDB's `DB` is
/// thread-safe.
#[derive(Debug)]
pub(crate) struct RawDb(NonNull<c_void>);

// SAFETY: rocksdb::DB is documented thread-safe for concurrent calls; the handle is only
// freed by `close`, which takes `self` by value.
unsafe impl Send for RawDb {}
// SAFETY: as above.
unsafe impl Sync for RawDb {}

impl RawDb {
    pub(crate) fn open(uri: &str, path: &str, o: &Options) -> Result<RawDb, DbError> {
        let (uri, path) = (c_string("URI", uri)?, c_string("path", path)?);
        let opts = OxbDbOptions {
            create_if_missing: c_int::from(o.create_if_missing),
            error_if_exists: c_int::from(o.error_if_exists),
            write_buffer_size: o.write_buffer_size.unwrap_or(0),
            target_file_size_base: o.target_file_size_base.unwrap_or(0),
            max_bytes_for_level_base: o.max_bytes_for_level_base.unwrap_or(0),
            disable_auto_compactions: c_int::from(o.disable_auto_compactions),
            paranoid_checks: c_int::from(o.paranoid_checks),
        };
        let mut st = OxbStatus::new();
        // SAFETY: valid C strings, a valid options struct and status out-param for the call.
        let p = unsafe { oxbdb_open(uri.as_ptr(), path.as_ptr(), &opts, &mut st) };
        st.into_result()?;
        NonNull::new(p)
            .map(RawDb)
            .ok_or_else(|| DbError::invalid("DB::Open returned no database".to_string()))
    }

    pub(crate) fn put(&self, k: &[u8], v: &[u8], sync: bool) -> Result<(), DbError> {
        let mut st = OxbStatus::new();
        // SAFETY: live DB handle; key and value slices valid for the call.
        unsafe {
            oxbdb_put(
                self.0.as_ptr(),
                k.as_ptr(),
                k.len(),
                v.as_ptr(),
                v.len(),
                c_int::from(sync),
                &mut st,
            )
        };
        st.into_result()
    }

    pub(crate) fn delete(&self, k: &[u8], sync: bool) -> Result<(), DbError> {
        let mut st = OxbStatus::new();
        // SAFETY: live DB handle; key slice valid for the call.
        unsafe {
            oxbdb_delete(
                self.0.as_ptr(),
                k.as_ptr(),
                k.len(),
                c_int::from(sync),
                &mut st,
            )
        };
        st.into_result()
    }

    pub(crate) fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        let mut st = OxbStatus::new();
        let (mut val, mut vl, mut found) = (std::ptr::null_mut(), 0usize, 0);
        // SAFETY: live DB handle; key slice and out-params valid for the call.
        unsafe {
            oxbdb_get(
                self.0.as_ptr(),
                k.as_ptr(),
                k.len(),
                &mut val,
                &mut vl,
                &mut found,
                &mut st,
            )
        };
        st.into_result()?;
        if found == 0 || val.is_null() {
            return Ok(None);
        }
        // SAFETY: the shim malloc'd `vl` bytes at `val` (at least 1); copied, then freed once.
        let v = unsafe { std::slice::from_raw_parts(val.cast::<u8>(), vl) }.to_vec();
        // SAFETY: as above.
        unsafe { oxbdb_free(val.cast::<c_void>()) };
        Ok(Some(v))
    }

    pub(crate) fn write(&self, b: &RawBatch, sync: bool) -> Result<(), DbError> {
        let mut st = OxbStatus::new();
        // SAFETY: live DB and batch handles.
        unsafe { oxbdb_write(self.0.as_ptr(), b.0.as_ptr(), c_int::from(sync), &mut st) };
        st.into_result()
    }

    pub(crate) fn flush(&self) -> Result<(), DbError> {
        let mut st = OxbStatus::new();
        // SAFETY: live DB handle.
        unsafe { oxbdb_flush(self.0.as_ptr(), &mut st) };
        st.into_result()
    }

    pub(crate) fn compact_range(
        &self,
        begin: Option<&[u8]>,
        end: Option<&[u8]>,
    ) -> Result<(), DbError> {
        let mut st = OxbStatus::new();
        let (b, e) = (begin.unwrap_or(&[]), end.unwrap_or(&[]));
        // SAFETY: live DB handle; slices valid for the call.
        unsafe {
            oxbdb_compact_range(
                self.0.as_ptr(),
                b.as_ptr(),
                b.len(),
                c_int::from(begin.is_some()),
                e.as_ptr(),
                e.len(),
                c_int::from(end.is_some()),
                &mut st,
            )
        };
        st.into_result()
    }

    pub(crate) fn property(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        let (mut val, mut vl) = (std::ptr::null_mut(), 0usize);
        // SAFETY: live DB handle, valid C string and out-params.
        let ok = unsafe { oxbdb_property(self.0.as_ptr(), name.as_ptr(), &mut val, &mut vl) };
        if ok == 0 || val.is_null() {
            return None;
        }
        // SAFETY: the shim malloc'd `vl` + 1 bytes at `val`; copied, then freed once.
        let s =
            String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(val.cast::<u8>(), vl) })
                .into_owned();
        // SAFETY: as above.
        unsafe { oxbdb_free(val.cast::<c_void>()) };
        Some(s)
    }

    pub(crate) fn iter(&self) -> Result<RawIter<'_>, DbError> {
        // SAFETY: live DB handle; the iterator borrows `self`, so it is freed before the DB.
        let p = unsafe { oxbdb_iter_new(self.0.as_ptr()) };
        NonNull::new(p)
            .map(|p| RawIter(p, std::marker::PhantomData))
            .ok_or_else(|| DbError::invalid("could not create an iterator".to_string()))
    }

    pub(crate) fn close(self) -> Result<(), DbError> {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        let mut st = OxbStatus::new();
        // SAFETY: `p` is the live DB handle; the shim frees it, and `self` is forgotten so
        // it is never used again.
        unsafe { oxbdb_close(p, &mut st) };
        st.into_result()
    }
}

impl Drop for RawDb {
    fn drop(&mut self) {
        let mut st = OxbStatus::new();
        // SAFETY: the live DB handle, closed exactly once (`close` forgets `self`).
        unsafe { oxbdb_close(self.0.as_ptr(), &mut st) };
        let _ = st.into_result();
    }
}

/// A `rocksdb::WriteBatch`.
#[derive(Debug)]
pub(crate) struct RawBatch(NonNull<c_void>);

// SAFETY: a WriteBatch is plain data owned by this handle; moving it between threads is safe.
unsafe impl Send for RawBatch {}

impl RawBatch {
    pub(crate) fn new() -> Result<RawBatch, DbError> {
        // SAFETY: no arguments; returns an owned batch or null.
        let p = unsafe { oxbdb_batch_new() };
        NonNull::new(p)
            .map(RawBatch)
            .ok_or_else(|| DbError::invalid("out of memory".to_string()))
    }

    pub(crate) fn put(&mut self, k: &[u8], v: &[u8]) {
        // SAFETY: live batch; slices valid for the call (the batch copies them).
        unsafe { oxbdb_batch_put(self.0.as_ptr(), k.as_ptr(), k.len(), v.as_ptr(), v.len()) }
    }

    pub(crate) fn delete(&mut self, k: &[u8]) {
        // SAFETY: live batch; slice valid for the call.
        unsafe { oxbdb_batch_delete(self.0.as_ptr(), k.as_ptr(), k.len()) }
    }
}

impl Drop for RawBatch {
    fn drop(&mut self) {
        // SAFETY: the owned batch, freed once.
        unsafe { oxbdb_batch_free(self.0.as_ptr()) }
    }
}

/// A `rocksdb::Iterator` borrowing its DB.
#[derive(Debug)]
pub(crate) struct RawIter<'a>(NonNull<c_void>, std::marker::PhantomData<&'a RawDb>);

impl RawIter<'_> {
    pub(crate) fn seek(&mut self, k: &[u8]) {
        // SAFETY: live iterator; slice valid for the call.
        unsafe { oxbdb_iter_seek(self.0.as_ptr(), k.as_ptr(), k.len()) }
    }

    pub(crate) fn seek_to_first(&mut self) {
        // SAFETY: live iterator.
        unsafe { oxbdb_iter_seek_to_first(self.0.as_ptr()) }
    }

    pub(crate) fn next(&mut self) {
        if self.valid() {
            // SAFETY: live iterator, positioned (RocksDB requires Valid() for Next()).
            unsafe { oxbdb_iter_next(self.0.as_ptr()) }
        }
    }

    pub(crate) fn valid(&self) -> bool {
        // SAFETY: live iterator.
        unsafe { oxbdb_iter_valid(self.0.as_ptr()) != 0 }
    }

    /// The current key (`None` if not valid). Borrowed until the iterator moves.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        if !self.valid() {
            return None;
        }
        let (mut p, mut n) = (std::ptr::null(), 0usize);
        // SAFETY: live, valid iterator; RocksDB's key slice stays valid until the next
        // move, which needs `&mut self`, so the borrow cannot outlive it.
        unsafe {
            oxbdb_iter_key(self.0.as_ptr(), &mut p, &mut n);
            Some(if n == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(p, n)
            })
        }
    }

    /// The current value (`None` if not valid). Borrowed until the iterator moves.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        if !self.valid() {
            return None;
        }
        let (mut p, mut n) = (std::ptr::null(), 0usize);
        // SAFETY: as for `key`.
        unsafe {
            oxbdb_iter_value(self.0.as_ptr(), &mut p, &mut n);
            Some(if n == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(p, n)
            })
        }
    }

    pub(crate) fn status(&self) -> Result<(), DbError> {
        let mut st = OxbStatus::new();
        // SAFETY: live iterator.
        unsafe { oxbdb_iter_status(self.0.as_ptr(), &mut st) };
        st.into_result()
    }
}

impl Drop for RawIter<'_> {
    fn drop(&mut self) {
        // SAFETY: the owned iterator, freed once, before its DB (lifetime).
        unsafe { oxbdb_iter_free(self.0.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::ptr;

    /// Calls `oxb_fsync_dir` as the C++ `OxDirectory::Fsync` does; returns the errno.
    fn fsync_dir(m: *mut MountRef, path: &str) -> c_int {
        let p = CString::new(path).unwrap();
        let mut err: *mut c_char = ptr::null_mut();
        let rc = oxb_fsync_dir(m, p.as_ptr(), &mut err);
        assert_eq!(rc == 0, err.is_null(), "a message exactly on error");
        oxb_free_string(err);
        rc
    }

    #[test]
    fn fsync_dir_flushes_the_device_and_maps_errors() {
        let m = Box::into_raw(Box::new(
            MountRef::mount("oxblob://malloc:64MiB?cache=4MiB").unwrap(),
        ));
        // SAFETY: `m` is live until released below.
        let fs = unsafe { &*m }.fs().clone();
        fs.mkdir("/db").unwrap();
        let h = fs
            .open(
                "/db/CURRENT.tmp",
                oxblob_blobfs::OpenFlags::create_truncate(),
            )
            .unwrap();
        h.close().unwrap();
        fs.rename("/db/CURRENT.tmp", "/db/CURRENT").unwrap();
        // The rename is committed deferred; the directory fsync is the device flush that
        // makes it durable.
        let before = fs.store().device_flushes();
        assert_eq!(fsync_dir(m, "/db"), 0);
        assert!(fs.store().device_flushes() > before, "no device flush");
        assert_eq!(fsync_dir(m, "/"), 0);
        assert_eq!(fsync_dir(m, "/missing"), libc::ENOENT);
        assert_eq!(fsync_dir(m, "/db/CURRENT"), libc::ENOTDIR);
        assert_eq!(oxb_fsync_dir(m, ptr::null(), ptr::null_mut()), libc::EINVAL);
        drop(fs);
        assert_eq!(oxb_release(m, ptr::null_mut()), 0);
    }
}
