//! Snapshots, clones, inflate, decouple and delete-with-merge. Each is one transaction (one log
//! record), durable on return.
//!
//! The caller must quiesce data I/O on the blob being snapshotted (no write in flight): a write
//! translated before the switch lands in a cluster that now belongs to the snapshot.

use crate::blob::{fill_clusters, Fill};
use crate::error::{BsError, Result};
use crate::store::{insert_extent, BlobStore};
use oxblob_format::blob::{FLAG_READ_ONLY, FLAG_SNAPSHOT, FLAG_THIN};
use oxblob_format::record::Mutation;
use oxblob_format::BlobRecord;
use std::sync::Arc;

impl BlobStore {
    /// Takes a snapshot of blob `id`: a new read-only blob takes its clusters, and `id` becomes
    /// a thin clone of it (reads fall through to the snapshot, writes allocate). One record;
    /// durable on return. Returns the snapshot's id.
    pub fn snapshot(&self, id: u64) -> Result<u64> {
        let inner = &self.inner;
        let mut md = inner.md_writable()?;
        let e = inner.entry(id)?;
        // The blob's clusters move to the snapshot: inline data of the log, which a replay
        // would write through the blob's later extents, is retired by a checkpoint first.
        if crate::blob::inline_in_log(inner, &e, 0, u64::MAX) {
            md.checkpoint(inner, None).map_err(|e| e.error)?;
        }
        // A copy: the blob's own state changes only if the commit succeeds.
        let mut orig = BlobRecord::clone(&e.read().current);
        if orig.is_read_only() {
            return Err(BsError::ReadOnly);
        }
        let sid = md.next_blob_id;
        md.next_blob_id += 1;
        let snap = BlobRecord {
            id: sid,
            flags: FLAG_READ_ONLY | FLAG_SNAPSHOT | (orig.flags & FLAG_THIN),
            num_clusters: orig.num_clusters,
            parent: orig.parent,
            extents: std::mem::take(&mut orig.extents),
            xattrs: Default::default(),
        };
        orig.parent = sid;
        orig.flags |= FLAG_THIN;
        let muts = [
            Mutation::PutBlob(Arc::new(snap)),
            Mutation::PutBlob(Arc::new(orig)),
            Mutation::SetNextId(sid + 1),
        ];
        md.commit_apply(inner, &muts, true).map_err(|e| e.error)?;
        Ok(sid)
    }

    /// Creates a thin clone of a read-only blob (a snapshot): same size, reads fall through to
    /// it. Durable on return. Returns the clone's id.
    pub fn create_clone(&self, snapshot_id: u64) -> Result<u64> {
        let inner = &self.inner;
        let mut md = inner.md_writable()?;
        let snap = Arc::clone(&inner.entry(snapshot_id)?.read().current);
        if !snap.is_read_only() {
            return Err(BsError::InvalidArgument(format!(
                "blob {snapshot_id:#x} is not read-only; snapshot it first"
            )));
        }
        let id = md.next_blob_id;
        md.next_blob_id += 1;
        let rec = BlobRecord {
            id,
            flags: FLAG_THIN,
            num_clusters: snap.num_clusters,
            parent: snapshot_id,
            ..Default::default()
        };
        md.commit_apply(
            inner,
            &[
                Mutation::PutBlob(Arc::new(rec)),
                Mutation::SetNextId(id + 1),
            ],
            true,
        )
        .map_err(|e| e.error)?;
        Ok(id)
    }

    /// Allocates every cluster of `id` (copying what its parents show, zeroing the rest) and
    /// removes its parent; the blob becomes thick. Blocks for the copies; durable on return.
    pub fn inflate(&self, id: u64) -> Result<()> {
        self.detach(id, true)
    }

    /// Allocates the clusters of `id` that its parent chain provides (copying them) and removes
    /// the parent; the blob stays thin. Unlike SPDK (which re-parents to the grandparent), this
    /// detaches from the whole chain. Durable on return.
    pub fn decouple_parent(&self, id: u64) -> Result<()> {
        self.detach(id, false)
    }

    fn detach(&self, id: u64, all: bool) -> Result<()> {
        let inner = &self.inner;
        let mut md = inner.md_writable()?;
        let e = inner.entry(id)?;
        let n = e.read().current.num_clusters;
        if n > 0 {
            fill_clusters(inner, &mut md, &e, 0, n - 1, all, Fill::Zeroes)?;
        }
        let mut rec = BlobRecord::clone(&e.read().current);
        rec.parent = 0;
        if all {
            rec.flags &= !FLAG_THIN;
        }
        md.commit_apply(inner, &[Mutation::PutBlob(Arc::new(rec))], true)
            .map_err(|e| e.error)?;
        Ok(())
    }

    /// Deletes a snapshot that has exactly one clone: the clone takes the clusters it lacks and
    /// the snapshot's parent, in the same record that deletes the snapshot.
    pub(crate) fn delete_merging(&self, id: u64) -> Result<bool> {
        let inner = &self.inner;
        let mut md = inner.md_writable()?;
        let clones: Vec<u64> = md
            .clones
            .get(&id)
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default();
        match clones.len() {
            0 => return Ok(false),
            1 => {}
            _ => return Err(BsError::HasClones(id)),
        }
        let se = inner.entry(id)?;
        if se.read().open > 0 {
            return Err(BsError::BlobOpen(id));
        }
        let snap = Arc::clone(&se.read().current);
        let mut clone = BlobRecord::clone(&inner.entry(clones[0])?.read().current);
        let upto = clone.num_clusters.min(snap.num_clusters);
        for ext in &snap.extents {
            for k in 0..ext.count {
                let l = ext.logical + k;
                if l < upto && clone.lookup(l).is_none() {
                    insert_extent(&mut clone.extents, l, ext.physical + k, 1);
                }
            }
        }
        clone.parent = snap.parent;
        let mut muts = vec![Mutation::PutBlob(Arc::new(clone)), Mutation::DeleteBlob(id)];
        if md.super_blob == Some(id) {
            muts.push(Mutation::SetSuperBlob(None));
        }
        md.commit_apply(inner, &muts, true).map_err(|e| e.error)?;
        Ok(true)
    }
}
