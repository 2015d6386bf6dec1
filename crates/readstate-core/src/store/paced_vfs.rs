//! A SQLite VFS that paces a checkpoint's writes ([`super::writeback::Throttle`]).
//!
//! SQLite copies a checkpoint's pages from its WAL into the database file at memory
//! speed: a few hundred MB in well under a second at `medium`. Starting write-back
//! early ([`super::writeback::Pacer`]) cannot help once pages are dirtied faster than
//! the device takes them; the backlog then reaches the device as one burst, and
//! every commit-log `fdatasync` meanwhile waits for it. This VFS makes the writes
//! themselves wait: each `xWrite` of the database file or its WAL first takes its
//! bytes from the store's throttle, which sleeps (on SQLite's own worker thread)
//! when the checkpoint is ahead of its rate.
//!
//! It is the platform's `unix` VFS with two methods replaced:
//! - `xOpen` opens the file with `unix`'s own `xOpen` and, when that succeeds, points
//!   the file at a copy of its methods table whose `xWrite` is [`paced_write`]; the
//!   throttle and the original table live in a [`Trailer`] after `unix`'s file
//!   structure, in the same allocation (the VFS asks SQLite for the larger size);
//! - every other file method is `unix`'s own, called with `unix`'s own structure.
//!
//! Only the `unix` VFS is wrapped: its methods other than `xOpen` ignore their VFS
//! argument (`UNUSED_PARAMETER` in `os_unix.c`), so the copies registered under this
//! VFS's name behave exactly as they do under `unix`. Where the default VFS is
//! another, [`register`] returns `None` and checkpoints run unthrottled.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use libsqlite3_sys as ffi;

use super::writeback::Throttle;

/// What this VFS's `pAppData` points to: leaked once per registration, so it
/// outlives every connection that uses the VFS (SQLite never unregisters it).
struct App {
    /// The `unix` VFS, whose methods do the work.
    unix: *mut ffi::sqlite3_vfs,
    throttle: Arc<Throttle>,
}

/// Kept after `unix`'s file structure, in the allocation SQLite makes for each file.
#[repr(C)]
struct Trailer {
    /// The methods table `unix`'s `xOpen` chose for this file.
    original: *const ffi::sqlite3_io_methods,
    /// The store's throttle; `null` for files that are not paced (journals, temp files).
    throttle: *const Throttle,
}

/// Registers a VFS that paces the database and WAL writes of its connections with
/// `throttle`, and returns its name (for `SqliteConnectOptions::vfs`). `None` when
/// the default VFS is not `unix` or registration fails: then nothing is paced.
///
/// Each call registers a new VFS and leaks a few hundred bytes for it (SQLite keeps
/// a pointer to it for the life of the process); a store registers one when opened.
pub(crate) fn register(throttle: Arc<Throttle>) -> Option<String> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: sqlite3_vfs_find with a null name returns the default VFS (initialising
    // the library first), a pointer SQLite keeps valid for the life of the process,
    // or null. It is only read here.
    let unix = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
    if unix.is_null() {
        return None;
    }
    // SAFETY: `unix` is non-null and valid for the process (above); zName of a
    // registered VFS is a NUL-terminated string that lives as long as the VFS.
    let base = unsafe { *unix };
    if base.zName.is_null() || unsafe { CStr::from_ptr(base.zName) }.to_bytes() != b"unix" {
        return None;
    }
    let size = usize::try_from(base.szOsFile).ok()?;
    let trailer_at =
        *TRAILER_AT.get_or_init(|| size.next_multiple_of(std::mem::align_of::<Trailer>()));
    let name = format!(
        "readstate-paced-{}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let c_name = CString::new(name.clone()).ok()?;
    let app = Box::leak(Box::new(App { unix, throttle }));
    let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
        szOsFile: c_int::try_from(trailer_at + std::mem::size_of::<Trailer>()).ok()?,
        pNext: std::ptr::null_mut(),
        zName: c_name.into_raw(),
        pAppData: std::ptr::from_mut(app).cast(),
        xOpen: Some(paced_open),
        ..base
    }));
    // SAFETY: `vfs` is a complete sqlite3_vfs that is never freed (leaked above), as
    // sqlite3_vfs_register requires; makeDflt = 0 leaves the default VFS alone.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    (rc == ffi::SQLITE_OK).then_some(name)
}

/// `xOpen`: `unix`'s, then the methods table with [`paced_write`].
unsafe extern "C" fn paced_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite calls xOpen with the VFS it was registered as, whose pAppData
    // is the leaked `App` of `register`.
    let app = unsafe { &*(*vfs).pAppData.cast::<App>() };
    // SAFETY: `unix`'s xOpen gets its own VFS and a file allocation at least as large
    // as its szOsFile (ours is larger), exactly as if SQLite had called it.
    let rc = match unsafe { (*app.unix).xOpen } {
        // SAFETY: as above.
        Some(open) => unsafe { open(app.unix, name, file, flags, out_flags) },
        None => return ffi::SQLITE_CANTOPEN,
    };
    // SAFETY: `file` is valid for writes of szOsFile bytes during xOpen.
    let original = unsafe { (*file).pMethods };
    if rc != ffi::SQLITE_OK || original.is_null() {
        return rc;
    }
    let paced = flags & (ffi::SQLITE_OPEN_MAIN_DB | ffi::SQLITE_OPEN_WAL) != 0;
    // SAFETY: `original` is the non-null methods table unix's xOpen installed, valid
    // for the process (os_unix.c's tables are static).
    let table = unsafe { paced_table(original) };
    // SAFETY: see `trailer`; the trailer is written before SQLite can call any method.
    unsafe {
        trailer_of(file).write(Trailer {
            original,
            throttle: if paced {
                Arc::as_ptr(&app.throttle)
            } else {
                std::ptr::null()
            },
        });
        (*file).pMethods = table;
    }
    rc
}

/// `xWrite`: takes `amount` bytes from the throttle (perhaps sleeping), then
/// `unix`'s `xWrite`.
unsafe extern "C" fn paced_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: this method is only installed by `paced_open` on files opened through
    // a VFS of `register`, whose trailer it wrote before installing it.
    let trailer = unsafe { &*trailer_of(file) };
    // SAFETY: a non-null throttle points into an App leaked by `register`.
    if let Some(throttle) = unsafe { trailer.throttle.as_ref() } {
        throttle.take(u64::try_from(amount).unwrap_or(0));
    }
    // SAFETY: `original` is unix's table for this file, whose xWrite is present (every
    // unix table has one); the arguments are SQLite's, unchanged.
    match unsafe { (*trailer.original).xWrite } {
        Some(write) => unsafe { write(file, data, amount, offset) },
        None => ffi::SQLITE_IOERR_WRITE,
    }
}

/// Where the [`Trailer`] of a file opened through a VFS of [`register`] is: after
/// `unix`'s structure, rounded up to the trailer's alignment.
///
/// # Safety
/// `file` points to an allocation of such a VFS's `szOsFile` bytes, which is
/// [`TRAILER_AT`] plus the trailer's size (set so in `register`, which also set
/// `TRAILER_AT` before registering any VFS).
unsafe fn trailer_of(file: *mut ffi::sqlite3_file) -> *mut Trailer {
    let at = TRAILER_AT.get().copied().unwrap_or(0);
    // SAFETY: the trailer is inside the allocation (the caller's contract) and
    // aligned: SQLite's allocations are 8-byte aligned and `at` is a multiple of
    // Trailer's alignment (8 on 64-bit, 4 on 32-bit).
    unsafe { file.cast::<u8>().add(at).cast::<Trailer>() }
}

/// The offset of a file's [`Trailer`]: `unix`'s szOsFile rounded up to the
/// trailer's alignment (the same for every registration: there is one `unix`).
static TRAILER_AT: OnceLock<usize> = OnceLock::new();

/// A copy of `original` with [`paced_write`] as its `xWrite`: made once per
/// distinct table (`unix` has a handful, by locking style) and leaked.
///
/// # Safety
/// `original` is a valid methods table that lives for the process.
unsafe fn paced_table(original: *const ffi::sqlite3_io_methods) -> *const ffi::sqlite3_io_methods {
    static TABLES: OnceLock<Mutex<Vec<(usize, usize)>>> = OnceLock::new();
    let tables = TABLES.get_or_init(Mutex::default);
    let mut tables = tables
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = original as usize;
    if let Some(&(_, table)) = tables.iter().find(|(k, _)| *k == key) {
        return table as *const ffi::sqlite3_io_methods;
    }
    // SAFETY: `original` is valid (the caller's contract); the table is plain data.
    let copy = unsafe { *original };
    let table: &'static ffi::sqlite3_io_methods = Box::leak(Box::new(ffi::sqlite3_io_methods {
        xWrite: Some(paced_write),
        ..copy
    }));
    let table = std::ptr::from_ref(table);
    tables.push((key, table as usize));
    table
}
