//! A consistent read of the relational store: exactly the state after one
//! applied entry, without a raft round trip.

use std::ops::Bound;
use std::sync::Arc;

use redb::{ReadOnlyTable, ReadableDatabase};

use crate::error::Result;
use crate::schema::RelCatalog;
use crate::state::{load_catalog, split_versioned, DATA, DEFS, META, SEQS, TVER};

/// An entry of a key space: key, version, payload.
pub type Item = (Vec<u8>, u64, Vec<u8>);

pub struct Snapshot {
    /// The last entry whose effects this snapshot holds.
    pub index: u64,
    pub catalog: Arc<RelCatalog>,
    data: ReadOnlyTable<(u64, &'static [u8]), &'static [u8]>,
    tver: ReadOnlyTable<u64, u64>,
    seqs: ReadOnlyTable<u64, i64>,
}

impl Snapshot {
    pub(crate) fn open(
        db: &redb::Database,
        cached: &arc_swap::ArcSwap<RelCatalog>,
    ) -> Result<Snapshot> {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let index = meta.get("applied")?.map(|v| v.value()).unwrap_or(0);
        let version = meta.get("schema_version")?.map(|v| v.value()).unwrap_or(0);
        let have = cached.load_full();
        let catalog = if have.version == version {
            have
        } else {
            let defs = txn.open_table(DEFS)?;
            let fresh = Arc::new(load_catalog(&defs, version)?);
            if fresh.version > cached.load().version {
                cached.store(fresh.clone());
            }
            fresh
        };
        Ok(Snapshot {
            index,
            catalog,
            data: txn.open_table(DATA)?,
            tver: txn.open_table(TVER)?,
            seqs: txn.open_table(SEQS)?,
        })
    }

    /// The version and payload stored under `key` in `space`.
    pub fn get(&self, space: u64, key: &[u8]) -> Result<Option<(u64, Vec<u8>)>> {
        match self.data.get((space, key))? {
            Some(v) => {
                let (ver, payload) = split_versioned(v.value())?;
                Ok(Some((ver, payload.to_vec())))
            }
            None => Ok(None),
        }
    }

    /// Entries of `space` between the bounds, in key order.
    pub fn range(&self, space: u64, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Result<Vec<Item>> {
        let lo = match lo {
            Bound::Included(k) => Bound::Included((space, k)),
            Bound::Excluded(k) => Bound::Excluded((space, k)),
            Bound::Unbounded => Bound::Included((space, &[][..])),
        };
        let hi = match hi {
            Bound::Included(k) => Bound::Included((space, k)),
            Bound::Excluded(k) => Bound::Excluded((space, k)),
            Bound::Unbounded => Bound::Excluded((space + 1, &[][..])),
        };
        let mut out = Vec::new();
        for item in self.data.range::<(u64, &[u8])>((lo, hi))? {
            let (k, v) = item?;
            let (ver, payload) = split_versioned(v.value())?;
            out.push((k.value().1.to_vec(), ver, payload.to_vec()));
        }
        Ok(out)
    }

    /// Every entry of `space` whose key starts with `prefix`.
    pub fn prefix(&self, space: u64, prefix: &[u8]) -> Result<Vec<Item>> {
        // The first key after every key with this prefix: the prefix with
        // its last byte below 0xFF incremented (none if all are 0xFF).
        let mut end = prefix.to_vec();
        while end.last() == Some(&0xFF) {
            end.pop();
        }
        let Some(last) = end.last_mut() else {
            return self.range(space, Bound::Included(prefix), Bound::Unbounded);
        };
        *last += 1;
        self.range(space, Bound::Included(prefix), Bound::Excluded(&end))
    }

    /// The index of the last entry that changed `table`.
    pub fn table_version(&self, table: u64) -> Result<u64> {
        Ok(self.tver.get(table)?.map(|v| v.value()).unwrap_or(0))
    }

    /// The last value a sequence handed out, as of this snapshot.
    pub fn sequence_last(&self, id: u64) -> Result<Option<i64>> {
        Ok(self.seqs.get(id)?.map(|v| v.value()))
    }
}
