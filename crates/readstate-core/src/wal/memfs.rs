//! An in-memory [`LogFs`] that models what a crash keeps, and injects failures: a test
//! double for the files of the log (also usable by tests of the code that drives the
//! log).
//!
//! The model, per file (inode): `data` is what reads see (the page cache); `durable` is
//! what a crash keeps for sure. `sync_data` makes `data` durable. A crash
//! ([`MemFs::crash`]) keeps `durable` plus a prefix, chosen by the test, of the bytes
//! written since (so a record may be torn). Directory entries follow the same rule:
//! creations, renames and removals survive a crash only once `sync_dir` succeeded.
//!
//! A failed `sync_data` is modelled as Linux does it after a write-back error (the
//! "fsyncgate" behaviour): the dirty bytes never reach the disk — the disk holds zeros
//! there, though the file size did get out — and the pages are marked clean, so a later
//! `sync_data` that "succeeds" does not write them either. With
//! [`Fault::FailDroppingCache`] the page cache also forgets them (reads see zeros).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;

use super::fs::{LogFile, LogFs};

/// Which call a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    List,
    Read,
    Create,
    OpenAppend,
    Write,
    SyncData,
    SyncDir,
    Rename,
    Remove,
    Truncate,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with EIO. For `Write` nothing is written; for `SyncData` the dirty
    /// bytes are lost for the disk (see the module docs); for the others nothing changes.
    Fail,
    /// `Write` only: the first `n` bytes reach the page cache, then ENOSPC.
    PartialWrite(usize),
    /// `SyncData` only: fails like [`Fault::Fail`], and the page cache drops the dirty
    /// bytes too (later reads see zeros in their place).
    FailDroppingCache,
    /// The call is cut short by a crash: it fails and changes nothing (for `SyncData`:
    /// the dirty bytes stay dirty). Follow it with [`MemFs::crash`].
    Crash,
}

/// Calls counted since the file system was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemFsStats {
    pub writes: u64,
    pub syncs: u64,
    pub dir_syncs: u64,
    pub creates: u64,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Byte ranges whose write-back failed: the disk holds zeros there for good.
    poisoned: Vec<Range<usize>>,
}

impl Inode {
    /// A successful fdatasync: the page cache reaches the disk, except poisoned pages.
    fn flush(&mut self) {
        self.durable.clone_from(&self.data);
        let len = self.durable.len();
        for r in &self.poisoned {
            let r = r.start.min(len)..r.end.min(len);
            self.durable[r].fill(0);
        }
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    dir: BTreeMap<String, u64>,
    durable_dir: BTreeMap<String, u64>,
    next_inode: u64,
    faults: Vec<(FaultOp, Fault)>,
    stats: MemFsStats,
}

impl State {
    fn take_fault(&mut self, op: FaultOp) -> Option<Fault> {
        let i = self.faults.iter().position(|(o, _)| *o == op)?;
        Some(self.faults.remove(i).1)
    }

    fn check(&mut self, op: FaultOp) -> io::Result<()> {
        match self.take_fault(op) {
            Some(_) => Err(eio(op)),
            None => Ok(()),
        }
    }

    fn inode_of(&self, name: &str) -> io::Result<u64> {
        self.dir
            .get(name)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file")))
    }

    fn inode(&mut self, id: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&id)
            .ok_or_else(|| io::Error::other("file handle outlived a crash"))
    }
}

fn eio(op: FaultOp) -> io::Error {
    io::Error::other(format!("injected I/O error in {op:?}"))
}

/// The in-memory file system. Clones share the same files.
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    state: Arc<Mutex<State>>,
}

impl MemFs {
    pub fn new() -> MemFs {
        MemFs::default()
    }

    /// The next call of `op` (after any faults already queued for it) fails with `fault`.
    pub fn fail_next(&self, op: FaultOp, fault: Fault) {
        self.state.lock().faults.push((op, fault));
    }

    /// Forgets every fault not yet triggered.
    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// A machine crash: directory entries revert to the last `sync_dir`; each file keeps
    /// its durable bytes plus `keep(name, unsynced_len)` bytes (clamped) of what was
    /// written after them. Open handles stop working. Pending faults are cleared.
    pub fn crash(&self, mut keep: impl FnMut(&str, usize) -> usize) {
        let mut st = self.state.lock();
        st.faults.clear();
        st.dir = st.durable_dir.clone();
        let live: BTreeSet<u64> = st.dir.values().copied().collect();
        st.inodes.retain(|id, _| live.contains(id));
        let names: Vec<(String, u64)> = st.dir.iter().map(|(n, id)| (n.clone(), *id)).collect();
        let mut done = BTreeSet::new();
        for (name, id) in names {
            if !done.insert(id) {
                continue;
            }
            let Some(inode) = st.inodes.get_mut(&id) else {
                continue;
            };
            let base = inode.durable.len();
            let unsynced = inode.data.len().saturating_sub(base);
            let k = keep(&name, unsynced).min(unsynced);
            let mut kept = inode.durable.clone();
            kept.extend_from_slice(&inode.data[base..base + k]);
            inode.data.clone_from(&kept);
            inode.durable = kept;
            inode.poisoned.clear();
        }
        // A fresh boot: the new process opens new handles, so old inode ids are retired.
        st.next_inode += 1_000_000;
    }

    /// A crash that keeps nothing unsynced.
    pub fn crash_losing_unsynced(&self) {
        self.crash(|_, _| 0);
    }

    /// A file's content as reads see it.
    pub fn file(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.state.lock();
        let id = st.dir.get(name)?;
        st.inodes.get(id).map(|i| i.data.clone())
    }

    /// A file's durable content, if its directory entry is durable.
    pub fn durable_file(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.state.lock();
        let id = st.durable_dir.get(name)?;
        st.inodes.get(id).map(|i| i.durable.clone())
    }

    /// Replaces (or makes) a file with `bytes`, durably: for corrupting files in tests.
    pub fn put_file(&self, name: &str, bytes: Vec<u8>) {
        let mut st = self.state.lock();
        let id = st.next_inode;
        st.next_inode += 1;
        st.inodes.insert(
            id,
            Inode {
                durable: bytes.clone(),
                data: bytes,
                poisoned: Vec::new(),
            },
        );
        st.dir.insert(name.to_owned(), id);
        st.durable_dir.insert(name.to_owned(), id);
    }

    /// File names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.state.lock().dir.keys().cloned().collect()
    }

    pub fn stats(&self) -> MemFsStats {
        self.state.lock().stats
    }
}

impl LogFs for MemFs {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut st = self.state.lock();
        st.check(FaultOp::List)?;
        Ok(st.dir.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut st = self.state.lock();
        st.check(FaultOp::Read)?;
        let id = st.inode_of(name)?;
        Ok(st.inode(id)?.data.clone())
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn LogFile>> {
        let mut st = self.state.lock();
        st.check(FaultOp::Create)?;
        st.stats.creates += 1;
        // O_TRUNC on an existing file is modelled as a new inode under the old name:
        // until the directory is synced, a crash brings back the old one.
        let id = st.next_inode;
        st.next_inode += 1;
        st.inodes.insert(id, Inode::default());
        st.dir.insert(name.to_owned(), id);
        Ok(Box::new(MemFile {
            state: self.state.clone(),
            inode: id,
        }))
    }

    fn open_append(&self, name: &str) -> io::Result<Box<dyn LogFile>> {
        let mut st = self.state.lock();
        st.check(FaultOp::OpenAppend)?;
        let id = st.inode_of(name)?;
        Ok(Box::new(MemFile {
            state: self.state.clone(),
            inode: id,
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check(FaultOp::Remove)?;
        st.inode_of(name)?;
        st.dir.remove(name);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check(FaultOp::Rename)?;
        let id = st.inode_of(from)?;
        st.dir.remove(from);
        st.dir.insert(to.to_owned(), id);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check(FaultOp::SyncDir)?;
        st.stats.dir_syncs += 1;
        st.durable_dir = st.dir.clone();
        Ok(())
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check(FaultOp::Truncate)?;
        let id = st.inode_of(name)?;
        let inode = st.inode(id)?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        inode.data.truncate(len);
        inode.poisoned.retain(|r| r.start < len);
        inode.flush();
        Ok(())
    }
}

#[derive(Debug)]
struct MemFile {
    state: Arc<Mutex<State>>,
    inode: u64,
}

impl LogFile for MemFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock();
        st.stats.writes += 1;
        let fault = st.take_fault(FaultOp::Write);
        let inode = st.inode(self.inode)?;
        match fault {
            None => {
                inode.data.extend_from_slice(buf);
                Ok(())
            }
            Some(Fault::PartialWrite(n)) => {
                inode.data.extend_from_slice(&buf[..n.min(buf.len())]);
                Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "injected ENOSPC after a partial write",
                ))
            }
            Some(_) => Err(eio(FaultOp::Write)),
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.stats.syncs += 1;
        let fault = st.take_fault(FaultOp::SyncData);
        let inode = st.inode(self.inode)?;
        match fault {
            None => {
                inode.flush();
                Ok(())
            }
            Some(Fault::Crash) => Err(eio(FaultOp::SyncData)),
            Some(fault) => {
                let dirty = inode.durable.len()..inode.data.len().max(inode.durable.len());
                if !dirty.is_empty() {
                    inode.durable.resize(dirty.end, 0);
                    if fault == Fault::FailDroppingCache {
                        inode.data[dirty.clone()].fill(0);
                    }
                    inode.poisoned.push(dirty);
                }
                Err(eio(FaultOp::SyncData))
            }
        }
    }
}
