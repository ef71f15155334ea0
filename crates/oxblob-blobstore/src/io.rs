//! The data path: per-thread [`BsChannel`]s over device channels.
//!
//! An I/O is translated under the blob's read lock (never a global lock) and submitted from the
//! caller's channel straight to the device. An I/O whose clusters are allocated and lie side
//! by side on the device (one cluster, or several allocated in order, as appends allocate
//! them) goes to the device as one request with the caller's own buffers (zero copy). An I/O
//! over clusters that are apart on the device, or touching unallocated clusters, is split into
//! one child device I/O per contiguous run; each child gets its own buffer and data is copied
//! between it and the caller's buffers (one copy, only in that case). The user completion is
//! produced when every child has completed.

use crate::blob::{resolve, Blob, Fill};
use crate::error::{BsError, Result};
use crate::store::{BlobStore, Inner};
use oxblob_bdev::{Completion, IoBuf, IoChannel, IoOp};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A finished blob I/O.
#[derive(Debug)]
pub struct BsCompletion {
    /// The caller's token.
    pub token: u64,
    /// Success, or what failed.
    pub result: Result<()>,
    /// The caller's buffers, returned (read data is in them). Empty for unmap/write-zeroes.
    pub bufs: Vec<IoBuf>,
}

impl BsCompletion {
    /// The first buffer (the only one of a `submit_read`/`submit_write`).
    pub fn into_buf(self) -> Option<IoBuf> {
        self.bufs.into_iter().next()
    }
}

/// A request refused at submit, with the caller's buffers.
#[derive(Debug)]
pub struct BsRejected {
    /// Why.
    pub error: BsError,
    /// The caller's buffers, returned.
    pub bufs: Vec<IoBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Unmap,
    WriteZeroes,
}

struct Parent {
    token: u64,
    bufs: Vec<IoBuf>,
    remaining: usize,
    error: Option<BsError>,
    /// For a read: inline-logged bytes not yet in place, copied at submit, laid over
    /// the device's data at completion, as (position in the range, bytes).
    patches: Vec<(usize, Vec<u8>)>,
}

/// Lays `patches` (see [`Parent::patches`]) over the data in `bufs`.
fn apply_patches(bufs: &mut [IoBuf], patches: &[(usize, Vec<u8>)]) {
    for (at, b) in patches {
        for_each_piece(bufs, *at, b.len(), |s, off| {
            s.copy_from_slice(&b[off..off + s.len()])
        });
    }
}

struct Child {
    parent: u64,
    /// The caller's buffers travel inside this child (zero copy).
    lent: bool,
    /// For split reads: where in the caller's range the child's data goes.
    copy_back: Option<usize>,
}

#[derive(Clone, Copy)]
enum Target {
    Phys(u64),
    Zero,
    Parent(u64, u64),
}

/// The rules on a data request's range: `offset` and `len` non-zero multiples of the io
/// unit, inside the blob.
fn check_range(inner: &Inner, blob: &Blob, offset: u64, len: u64) -> Result<()> {
    let unit = inner.geo.io_unit;
    if len == 0 || offset % unit != 0 || len % unit != 0 {
        return Err(BsError::InvalidArgument(format!(
            "offset {offset} / length {len} must be non-zero multiples of the io unit {unit}"
        )));
    }
    let size = blob.size_bytes();
    if offset.checked_add(len).is_none_or(|e| e > size) {
        return Err(BsError::InvalidArgument(format!(
            "{len} bytes at {offset} reach past the blob's {size} bytes"
        )));
    }
    Ok(())
}

/// Where the bytes of `[offset, offset + len)` of `blob` are: `(offset in the request, bytes,
/// target)` pieces in order, pieces on adjacent device bytes merged (one device I/O across
/// clusters that lie side by side, with the caller's buffers whole), and, for a read
/// (`patches`), a copy of the inline-logged bytes to lay over what the device returns.
/// Translated under the blob's read lock; parents resolved after it.
#[allow(clippy::type_complexity)]
fn plan(
    inner: &Arc<Inner>,
    blob: &Blob,
    offset: u64,
    len: u64,
    patches: bool,
) -> Result<(Vec<(usize, u64, Target)>, Vec<(usize, Vec<u8>)>)> {
    let cs = inner.geo.cluster_size;
    let mut pieces: Vec<(usize, u64, Target)> = Vec::new();
    let mut copied = Vec::new();
    {
        let st = blob.entry.read();
        if patches {
            if let Some(p) = st.pending() {
                copied = p.patches(offset, len);
            }
        }
        let mut at = offset;
        while at < offset + len {
            let c = at / cs;
            let in_c = at % cs;
            let n = (cs - in_c).min(offset + len - at);
            let t = match st.current.lookup(c) {
                Some(p) => Target::Phys(inner.geo.data_first_byte + p * cs + in_c),
                None if st.current.parent != 0 => Target::Parent(c, in_c),
                None => Target::Zero,
            };
            pieces.push(((at - offset) as usize, n, t));
            at += n;
        }
    }
    let parent_id = blob.parent();
    for p in pieces.iter_mut() {
        if let Target::Parent(c, in_c) = p.2 {
            p.2 = match resolve(inner, parent_id, c)? {
                Some(ph) => Target::Phys(inner.geo.data_first_byte + ph * cs + in_c),
                None => Target::Zero,
            };
        }
    }
    let mut merged: Vec<(usize, u64, Target)> = Vec::with_capacity(pieces.len());
    for p in pieces {
        if let (Some(last), Target::Phys(d)) = (merged.last_mut(), p.2) {
            if matches!(last.2, Target::Phys(ld) if ld + last.1 == d) {
                last.1 += p.1;
                continue;
            }
        }
        merged.push(p);
    }
    Ok((merged, copied))
}

/// A per-thread I/O channel for blob data. `Send`, not `Sync`. Many I/Os may be in flight;
/// they complete in any order through [`BsChannel::poll`].
pub struct BsChannel {
    inner: Arc<Inner>,
    ch: Box<dyn IoChannel>,
    next_id: u64,
    parents: HashMap<u64, Parent>,
    children: HashMap<u64, Child>,
    ready: VecDeque<(u64, BsCompletion)>,
    scratch: Vec<Completion>,
}

impl BlobStore {
    /// A new I/O channel for the calling thread.
    pub fn channel(&self) -> Result<BsChannel> {
        if self.inner.is_unloaded() {
            return Err(BsError::Unloaded);
        }
        Ok(BsChannel {
            inner: Arc::clone(&self.inner),
            ch: self.inner.dev.channel()?,
            next_id: 1,
            parents: HashMap::new(),
            children: HashMap::new(),
            ready: VecDeque::new(),
            scratch: Vec::new(),
        })
    }
}

fn total_len(bufs: &[IoBuf]) -> u64 {
    bufs.iter().map(|b| b.len() as u64).sum()
}

/// Calls `f(buf, range_in_buf, offset_in_part)` for each piece of `bufs` overlapping
/// `off..off+len` of their concatenation.
fn for_each_piece(bufs: &mut [IoBuf], off: usize, len: usize, mut f: impl FnMut(&mut [u8], usize)) {
    let mut base = 0usize;
    for b in bufs.iter_mut() {
        let blen = b.len();
        let (s, e) = (off.max(base), (off + len).min(base + blen));
        if s < e {
            f(&mut b[s - base..e - base], s - off);
        }
        base += blen;
        if base >= off + len {
            break;
        }
    }
}

impl BsChannel {
    /// I/Os submitted and not yet returned by `poll`.
    pub fn in_flight(&self) -> usize {
        self.parents.len() + self.ready.len()
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        blob: &Blob,
        kind: Kind,
        offset: u64,
        bufs: Vec<IoBuf>,
        len: u64,
        token: u64,
        valid_end: u64,
    ) -> std::result::Result<u64, BsRejected> {
        let reject = |error: BsError, bufs: Vec<IoBuf>| Err(BsRejected { error, bufs });
        if self.inner.is_unloaded() || !Arc::ptr_eq(&self.inner, &blob.inner) {
            return reject(BsError::Unloaded, bufs);
        }
        let unit = self.inner.geo.io_unit;
        let cs = self.inner.geo.cluster_size;
        if let Err(e) = check_range(&self.inner, blob, offset, len) {
            return reject(e, bufs);
        }
        if bufs.iter().any(|b| b.len() as u64 % unit != 0) {
            return reject(
                BsError::InvalidArgument(format!("buffer lengths must be multiples of {unit}")),
                bufs,
            );
        }
        // Inline-logged bytes not yet in place: anything but a read puts them in place
        // first, so its own bytes land after them (a read takes a copy below).
        let meets = kind != Kind::Read
            && blob
                .entry
                .read()
                .pending()
                .is_some_and(|p| p.overlaps(offset, len));
        if meets {
            let r = self
                .inner
                .md_writable()
                .and_then(|mut md| md.settle(&self.inner, Some(blob.id)));
            if let Err(e) = r {
                return reject(e, bufs);
            }
        }
        let (first, last) = (offset / cs, (offset + len - 1) / cs);
        if kind != Kind::Read {
            let (ro, missing) = {
                let st = blob.entry.read();
                let missing = (first..=last).any(|c| st.current.lookup(c).is_none());
                (st.current.is_read_only() || self.inner.read_only, missing)
            };
            if ro {
                return reject(BsError::ReadOnly, bufs);
            }
            if missing {
                // A plain write zeroes its new clusters whole before the data goes out, so
                // no reader and no crash can see a cluster's old bytes, even mid-write.
                let fill = if valid_end == u64::MAX {
                    Fill::Zeroes
                } else {
                    Fill::Around {
                        start: offset,
                        end: offset + len,
                        valid_end: valid_end.checked_next_multiple_of(unit).unwrap_or(u64::MAX),
                    }
                };
                if let Err(e) = blob.ensure_allocated(first, last, kind == Kind::Write, fill) {
                    return reject(e, bufs);
                }
            }
        }
        let (pieces, patches) = match plan(&self.inner, blob, offset, len, kind == Kind::Read) {
            Ok(p) => p,
            Err(e) => return reject(e, bufs),
        };
        let children = pieces
            .iter()
            .filter(|p| matches!(p.2, Target::Phys(_)))
            .count();
        if children > self.ch.capacity().saturating_sub(self.ch.in_flight()) {
            return reject(
                BsError::Busy(format!("channel cannot take {children} more device I/Os")),
                bufs,
            );
        }
        let pid = self.alloc_id();
        let mut parent = Parent {
            token,
            bufs: Vec::new(),
            remaining: 0,
            error: None,
            patches,
        };
        let mut ops: Vec<(IoOp, Child)> = Vec::new();
        let zero_copy = pieces.len() == 1
            && matches!(pieces[0].2, Target::Phys(_))
            && matches!(kind, Kind::Read | Kind::Write);
        if zero_copy {
            let Target::Phys(dev_off) = pieces[0].2 else {
                return reject(BsError::InvalidArgument("translation".into()), bufs);
            };
            let op = match (kind, bufs.len()) {
                (Kind::Read, 1) => IoOp::Read {
                    offset: dev_off,
                    buf: bufs.into_iter().next().unwrap_or_else(|| IoBuf::zeroed(0)),
                },
                (Kind::Read, _) => IoOp::Readv {
                    offset: dev_off,
                    bufs,
                },
                (_, 1) => IoOp::Write {
                    offset: dev_off,
                    buf: bufs.into_iter().next().unwrap_or_else(|| IoBuf::zeroed(0)),
                },
                _ => IoOp::Writev {
                    offset: dev_off,
                    bufs,
                },
            };
            ops.push((
                op,
                Child {
                    parent: pid,
                    lent: true,
                    copy_back: None,
                },
            ));
        } else {
            let mut bufs = bufs;
            for (uoff, n, t) in &pieces {
                let n_us = *n as usize;
                match (kind, t) {
                    (Kind::Read, Target::Phys(d)) => ops.push((
                        IoOp::Read {
                            offset: *d,
                            buf: IoBuf::zeroed(n_us),
                        },
                        Child {
                            parent: pid,
                            lent: false,
                            copy_back: Some(*uoff),
                        },
                    )),
                    (Kind::Read, _) => for_each_piece(&mut bufs, *uoff, n_us, |s, _| s.fill(0)),
                    (Kind::Write, Target::Phys(d)) => {
                        // The pieces come in order and cover the extent: each byte is
                        // written once (no clearing first).
                        let mut cb = IoBuf::with_capacity(n_us);
                        for_each_piece(&mut bufs, *uoff, n_us, |s, at| {
                            debug_assert_eq!(at, cb.len());
                            cb.extend_from_slice(s)
                        });
                        debug_assert_eq!(cb.len(), n_us);
                        ops.push((
                            IoOp::Write {
                                offset: *d,
                                buf: cb,
                            },
                            Child {
                                parent: pid,
                                lent: false,
                                copy_back: None,
                            },
                        ));
                    }
                    (Kind::Unmap, Target::Phys(d)) | (Kind::WriteZeroes, Target::Phys(d)) => {
                        let op = if kind == Kind::Unmap {
                            IoOp::Unmap {
                                offset: *d,
                                len: *n,
                            }
                        } else {
                            IoOp::WriteZeroes {
                                offset: *d,
                                len: *n,
                            }
                        };
                        ops.push((
                            op,
                            Child {
                                parent: pid,
                                lent: false,
                                copy_back: None,
                            },
                        ))
                    }
                    // Unallocated with no parent data: already reads as zeroes.
                    _ => {}
                }
            }
            parent.bufs = bufs;
        }
        parent.remaining = ops.len();
        if ops.is_empty() {
            apply_patches(&mut parent.bufs, &parent.patches);
            self.ready.push_back((
                pid,
                BsCompletion {
                    token,
                    result: Ok(()),
                    bufs: parent.bufs,
                },
            ));
            return Ok(pid);
        }
        self.parents.insert(pid, parent);
        for (op, child) in ops {
            let cid = self.alloc_id();
            self.children.insert(cid, child);
            if let Err(r) = self.ch.submit(cid, op) {
                // Treat a refused child as a failed one.
                self.finish_child(Completion {
                    token: cid,
                    result: Err(r.error),
                    op: r.op,
                });
            }
        }
        Ok(pid)
    }

    fn finish_child(&mut self, c: Completion) {
        let Some(child) = self.children.remove(&c.token) else {
            return;
        };
        let Some(p) = self.parents.get_mut(&child.parent) else {
            return;
        };
        if let Err(e) = c.result {
            p.error.get_or_insert(BsError::Io(e));
        }
        if child.lent {
            p.bufs = c.op.into_bufs();
        } else if let Some(at) = child.copy_back {
            if let Some(src) = c.op.into_buf() {
                for_each_piece(&mut p.bufs, at, src.len(), |s, off| {
                    s.copy_from_slice(&src[off..off + s.len()])
                });
            }
        }
        p.remaining -= 1;
        if p.remaining == 0 {
            if let Some(mut p) = self.parents.remove(&child.parent) {
                if p.error.is_none() {
                    apply_patches(&mut p.bufs, &p.patches);
                }
                self.ready.push_back((
                    child.parent,
                    BsCompletion {
                        token: p.token,
                        result: p.error.map_or(Ok(()), Err),
                        bufs: p.bufs,
                    },
                ));
            }
        }
    }

    fn pump(&mut self, min: usize) -> Result<()> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let r = self.ch.poll(&mut scratch, min);
        for c in scratch.drain(..) {
            self.finish_child(c);
        }
        self.scratch = scratch;
        r.map(|_| ()).map_err(BsError::from)
    }

    /// Reaps finished I/Os into `out`, waiting until at least `min` are available (`min` is
    /// capped at the number in flight). Returns how many were appended.
    pub fn poll(&mut self, out: &mut Vec<BsCompletion>, min: usize) -> Result<usize> {
        let min = min.min(self.in_flight());
        self.pump(0)?;
        while self.ready.len() < min {
            self.pump(1)?;
        }
        let n = self.ready.len();
        out.extend(self.ready.drain(..).map(|(_, c)| c));
        Ok(n)
    }

    fn wait(&mut self, pid: u64) -> Result<BsCompletion> {
        loop {
            if let Some(i) = self.ready.iter().position(|(id, _)| *id == pid) {
                if let Some((_, c)) = self.ready.remove(i) {
                    return Ok(c);
                }
            }
            if !self.parents.contains_key(&pid) {
                return Err(BsError::InvalidArgument("I/O vanished".into()));
            }
            self.pump(1)?;
        }
    }
}

macro_rules! rej {
    ($e:expr) => {
        $e.map(|_| ()).map_err(Box::new)
    };
}

impl Blob {
    /// Submits a read of `buf.len()` bytes at byte `offset` into `buf`.
    pub fn submit_read(
        &self,
        ch: &mut BsChannel,
        offset: u64,
        buf: IoBuf,
        token: u64,
    ) -> std::result::Result<(), Box<BsRejected>> {
        let len = buf.len() as u64;
        rej!(ch.submit(self, Kind::Read, offset, vec![buf], len, token, u64::MAX))
    }

    /// Reads `dst.len()` bytes at byte `offset` of the blob straight into `dst`, on this
    /// thread, when the device can read into the caller's memory
    /// ([`oxblob_bdev::BlockDevice::read_into`]): `Ok(true)` once the bytes are there (with
    /// unallocated ranges as zeroes, a clone's parent data, inline-logged bytes laid over, as
    /// any read), `Ok(false)` when the device declines (a wrapper, a `dst` not aligned as
    /// the device needs) and the caller reads through a channel instead. The rules on
    /// `offset` and the length are those of [`Blob::submit_read`]; breaking them is an
    /// error.
    ///
    /// No staging buffer and no copy: for a reader that waits for each read anyway and owns
    /// an aligned buffer, such as RocksDB with direct reads on a mount without a cache.
    pub fn read_into(&self, offset: u64, dst: &mut [u8]) -> Result<bool> {
        if self.inner.is_unloaded() {
            return Err(BsError::Unloaded);
        }
        let len = dst.len() as u64;
        check_range(&self.inner, self, offset, len)?;
        // Pieces start at io-unit multiples of `dst`: if its start suits the device, all do.
        let align = usize::try_from(self.inner.dev.info().caps.buf_align.max(1)).unwrap_or(1);
        if dst.as_ptr() as usize % align != 0 {
            return Ok(false);
        }
        let (pieces, patches) = plan(&self.inner, self, offset, len, true)?;
        for (at, n, t) in pieces {
            let piece = &mut dst[at..at + n as usize];
            match t {
                Target::Phys(d) => {
                    if !self.inner.dev.read_into(d, piece)? {
                        return Ok(false);
                    }
                }
                Target::Zero | Target::Parent(..) => piece.fill(0),
            }
        }
        for (at, b) in &patches {
            dst[*at..*at + b.len()].copy_from_slice(b);
        }
        Ok(true)
    }

    /// Submits a read into several buffers, filled in order.
    pub fn submit_readv(
        &self,
        ch: &mut BsChannel,
        offset: u64,
        bufs: Vec<IoBuf>,
        token: u64,
    ) -> std::result::Result<(), Box<BsRejected>> {
        let len = total_len(&bufs);
        rej!(ch.submit(self, Kind::Read, offset, bufs, len, token, u64::MAX))
    }

    /// Submits a write of `buf` at byte `offset`. On a thin blob, a write to an unallocated
    /// cluster **blocks** in this call to allocate and fill the cluster (md mutex, device
    /// writes); the mapping is durable at the next `sync_md`.
    pub fn submit_write(
        &self,
        ch: &mut BsChannel,
        offset: u64,
        buf: IoBuf,
        token: u64,
    ) -> std::result::Result<(), Box<BsRejected>> {
        let len = buf.len() as u64;
        rej!(ch.submit(self, Kind::Write, offset, vec![buf], len, token, u64::MAX))
    }

    /// Submits a write of several buffers, in order. Allocation as for `submit_write`.
    pub fn submit_writev(
        &self,
        ch: &mut BsChannel,
        offset: u64,
        bufs: Vec<IoBuf>,
        token: u64,
    ) -> std::result::Result<(), Box<BsRejected>> {
        let len = total_len(&bufs);
        rej!(ch.submit(self, Kind::Write, offset, bufs, len, token, u64::MAX))
    }

    /// Submits an unmap: the range reads as zeroes afterwards. Clusters stay allocated.
    pub fn submit_unmap(
        &self,
        ch: &mut BsChannel,
        offset: u64,
        len: u64,
        token: u64,
    ) -> std::result::Result<(), Box<BsRejected>> {
        rej!(ch.submit(self, Kind::Unmap, offset, Vec::new(), len, token, u64::MAX))
    }

    /// Submits a write of zeroes over a range.
    pub fn submit_write_zeroes(
        &self,
        ch: &mut BsChannel,
        offset: u64,
        len: u64,
        token: u64,
    ) -> std::result::Result<(), Box<BsRejected>> {
        rej!(ch.submit(
            self,
            Kind::WriteZeroes,
            offset,
            Vec::new(),
            len,
            token,
            u64::MAX
        ))
    }

    fn run_within(
        &self,
        ch: &mut BsChannel,
        kind: Kind,
        offset: u64,
        bufs: Vec<IoBuf>,
        len: u64,
        valid_end: u64,
    ) -> Result<Vec<IoBuf>> {
        let pid = ch
            .submit(self, kind, offset, bufs, len, u64::MAX, valid_end)
            .map_err(|r| r.error)?;
        let c = ch.wait(pid)?;
        c.result.map(|()| c.bufs)
    }

    fn run(
        &self,
        ch: &mut BsChannel,
        kind: Kind,
        offset: u64,
        bufs: Vec<IoBuf>,
        len: u64,
    ) -> Result<Vec<IoBuf>> {
        self.run_within(ch, kind, offset, bufs, len, u64::MAX)
    }

    /// Reads `len` bytes at `offset` and waits. Other I/Os on the channel keep their
    /// completions for the next `poll`.
    pub fn read(&self, ch: &mut BsChannel, offset: u64, len: usize) -> Result<Vec<u8>> {
        let bufs = self.run(ch, Kind::Read, offset, vec![IoBuf::zeroed(len)], len as u64)?;
        Ok(bufs
            .into_iter()
            .next()
            .map(|b| b.to_vec())
            .unwrap_or_default())
    }

    /// Writes `data` at `offset` and waits (not durable until `sync_md`/close or a store flush).
    pub fn write(&self, ch: &mut BsChannel, offset: u64, data: &[u8]) -> Result<()> {
        self.run(
            ch,
            Kind::Write,
            offset,
            vec![IoBuf::from_slice(data)],
            data.len() as u64,
        )
        .map(|_| ())
    }

    /// Writes `buf` at `offset` and waits, without copying it (for callers that build the
    /// bytes in an [`IoBuf`] already). Not durable until `sync_md`/close or a store flush.
    pub fn write_buf(&self, ch: &mut BsChannel, offset: u64, buf: IoBuf) -> Result<()> {
        let len = buf.len() as u64;
        self.run(ch, Kind::Write, offset, vec![buf], len)
            .map(|_| ())
    }

    /// [`Blob::write_buf`] for a caller that never reads this blob's bytes at or past
    /// `valid_end` before writing them (a file system that knows where its data ends, and
    /// zeroes any gap it opens explicitly): a cluster this write allocates is zeroed only
    /// before the write and between its end and `valid_end`, not over the rest, which the
    /// caller will write (an append) or never read. A thin blob's new cluster otherwise costs
    /// a write of zeroes over all of it, under the metadata mutex, before the data goes out.
    /// After a crash the bytes past `valid_end` read as whatever the cluster held before:
    /// the caller's own metadata must never cover them without writing them first.
    pub fn write_buf_within(
        &self,
        ch: &mut BsChannel,
        offset: u64,
        buf: IoBuf,
        valid_end: u64,
    ) -> Result<()> {
        let len = buf.len() as u64;
        self.run_within(ch, Kind::Write, offset, vec![buf], len, valid_end)
            .map(|_| ())
    }

    /// Writes zeroes over a range and waits.
    pub fn write_zeroes(&self, ch: &mut BsChannel, offset: u64, len: u64) -> Result<()> {
        self.run(ch, Kind::WriteZeroes, offset, Vec::new(), len)
            .map(|_| ())
    }

    /// Unmaps a range and waits.
    pub fn unmap(&self, ch: &mut BsChannel, offset: u64, len: u64) -> Result<()> {
        self.run(ch, Kind::Unmap, offset, Vec::new(), len)
            .map(|_| ())
    }
}
