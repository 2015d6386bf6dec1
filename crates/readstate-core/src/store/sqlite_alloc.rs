//! SQLite's memory from jemalloc, the allocator the rest of the process uses.
//!
//! **Why.** SQLite allocates with the C library's `malloc` unless told otherwise:
//! its page caches (up to 64 MiB per writer here), and a checkpoint's statement
//! parameters, tens of MB each under a bulk load. glibc keeps freed memory inside
//! per-thread arenas until `malloc_trim`, and SQLite runs on several threads (sqlx's
//! worker per connection), so after a load the C heap held well over 100 MB that
//! nothing used. With SQLite on jemalloc, what it frees is purged by jemalloc's
//! background threads like any other freed memory, and `readstate_allocator_allocated_bytes`
//! counts SQLite too.
//!
//! SQLite takes the allocator from `sqlite3_config(SQLITE_CONFIG_MALLOC)`, which is
//! only allowed before the library initialises (its first use in the process), so
//! `main` calls [`install`] before anything else. If something used SQLite earlier
//! (a test process, say), the call is refused and SQLite keeps the C library's
//! allocator: nothing breaks, only freed memory goes back later.

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

/// Installs jemalloc as SQLite's allocator, once per process; true when SQLite uses
/// it (false when SQLite was already initialised with another one). Its caller,
/// `main`, runs it before any other thread exists (see `sqlite::use_jemalloc`).
pub(crate) fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(x_malloc),
            xFree: Some(x_free),
            xRealloc: Some(x_realloc),
            xSize: Some(x_size),
            xRoundup: Some(x_roundup),
            xInit: Some(x_init),
            xShutdown: Some(x_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: SQLITE_CONFIG_MALLOC takes one argument, a pointer to a complete
        // sqlite3_mem_methods, which SQLite copies before returning (so a local is
        // enough). sqlite3_config must not race other SQLite calls: the OnceLock runs
        // it once, and `main` calls it before starting any other thread (the tests
        // that call it use no SQLite before). If SQLite is already initialised it
        // returns SQLITE_MISUSE and changes nothing.
        #[allow(unsafe_code)]
        let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &raw const methods) };
        if rc != ffi::SQLITE_OK {
            tracing::debug!(rc, "SQLite was initialised already; it keeps its allocator");
        }
        rc == ffi::SQLITE_OK
    })
}

/// A size from SQLite: never negative (SQLite checks), as `usize`.
fn size(n: c_int) -> usize {
    usize::try_from(n).unwrap_or(0)
}

// The functions below are what SQLite calls. SQLite requires 8-byte alignment of
// what xMalloc returns; jemalloc aligns every allocation to at least 16 bytes on
// x86-64 and aarch64 (8 for 8-byte requests, which SQLite never makes below 8).

#[allow(unsafe_code)]
unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
    // SAFETY: jemalloc's malloc accepts any size and returns null on failure, which
    // SQLite handles as SQLITE_NOMEM.
    unsafe { tikv_jemalloc_sys::malloc(size(n)) }
}

#[allow(unsafe_code)]
unsafe extern "C" fn x_free(p: *mut c_void) {
    // SAFETY: SQLite only frees what x_malloc / x_realloc returned, once (or null,
    // which free ignores).
    unsafe { tikv_jemalloc_sys::free(p) }
}

#[allow(unsafe_code)]
unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // SAFETY: `p` came from x_malloc / x_realloc (SQLite never passes null here);
    // on failure realloc returns null and leaves `p` allocated, as SQLite expects.
    unsafe { tikv_jemalloc_sys::realloc(p, size(n)) }
}

#[allow(unsafe_code)]
unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
    // SAFETY: `p` is a live allocation of x_malloc / x_realloc (SQLite's contract
    // for xSize), so jemalloc knows its usable size.
    let usable = unsafe { tikv_jemalloc_sys::malloc_usable_size(p) };
    c_int::try_from(usable).unwrap_or(c_int::MAX)
}

#[allow(unsafe_code)]
unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
    // SAFETY: nallocx only computes the size class of a request; it allocates
    // nothing and returns 0 when the size is too large to allocate.
    let rounded = unsafe { tikv_jemalloc_sys::nallocx(size(n).max(1), 0) };
    c_int::try_from(rounded).map_or(n, |r| r.max(n))
}

// SQLite declares these unsafe; they touch nothing.
#[allow(unsafe_code)]
unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

#[allow(unsafe_code)]
unsafe extern "C" fn x_shutdown(_: *mut c_void) {}
