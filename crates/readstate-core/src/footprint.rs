//! The process's own memory footprint, beyond what the cache counts: freed heap
//! pages going back to the system while the service is idle, and the pages of the
//! executable that only start-up needed.
//!
//! **Why.** An idle node started with an empty cache held 17 MB resident, of which
//! 11 MB were pages of its own binary: Linux maps 16 pages around every page a
//! process faults in from a file (`fault_around_bytes`, 64 KiB), so the few hundred
//! functions start-up runs once (configuration, migrations, opening the database,
//! building the router) keep 11 MB of a 16 MB binary mapped. After start-up the
//! service asks the kernel to reclaim those clean file pages; what serving needs is
//! faulted back in on first use. jemalloc, without its background threads, returns
//! freed pages only when a later allocation happens in the same arena, so a node left
//! idle after a burst would keep the burst's pages.

/// Turns on jemalloc's background threads: freed dirty pages go back to the system
/// after `dirty_decay_ms` (10 s by default) even when nothing else allocates, so RSS
/// falls after a burst while the service sits idle. One thread per arena in use,
/// asleep between purges.
///
/// # Errors
/// jemalloc's error when it cannot start them (the setting stays off).
pub fn purge_in_background() -> Result<(), tikv_jemalloc_ctl::Error> {
    tikv_jemalloc_ctl::background_thread::write(true)
}

/// Gives the C library's freed heap memory back to the system and says whether any
/// went back. The service's SQLite allocates with jemalloc (`store/sqlite_alloc.rs`,
/// installed by `main`); what is left on the C heap is other C code's, and SQLite's
/// wherever that install was refused (SQLite used before it). Measured before the
/// install existed, with SQLite on the C heap: glibc keeps what is freed inside its arenas (one per thread that
/// allocated, in 64 MiB heaps) until `malloc_trim`: after the `medium` bench's load,
/// with the writer's page cache already freed, a glibc build held 349 MB resident and
/// 174 MB after the trim. musl's allocator returns freed memory by itself and has no
/// `malloc_trim`; there, and off Linux, this does nothing and answers `false`.
pub fn trim_c_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        malloc_trim()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn malloc_trim() -> bool {
    // SAFETY: malloc_trim(3) takes a number and works on glibc's allocator state
    // under the allocator's own locks, as any malloc or free does, from any thread.
    // It only returns free pages to the system (madvise or a shrunk heap): memory in
    // use, by Rust or by C code, keeps its address and contents.
    unsafe { libc::malloc_trim(0) != 0 }
}

/// Asks the kernel to reclaim the pages of this process's executable that are
/// mapped read-only (code, constants): clean file pages, which later use faults back
/// in from the page cache or the file. Writable mappings (relocated data) are left
/// alone. Returns the bytes of the mappings advised.
///
/// # Errors
/// Reading `/proc/self/exe` or `/proc/self/maps` fails, or `madvise` does (kernels
/// before 5.4 have no `MADV_PAGEOUT`).
#[cfg(target_os = "linux")]
pub fn release_executable_pages() -> std::io::Result<u64> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut advised = 0u64;
    for (start, end) in maps
        .lines()
        .filter_map(|line| read_only_mapping_of(line, &exe))
    {
        advise_pageout(start, end)?;
        advised += end - start;
    }
    Ok(advised)
}

/// `(start, end)` of a `/proc/self/maps` line that maps `file` without write access.
#[cfg(target_os = "linux")]
fn read_only_mapping_of(line: &str, file: &std::path::Path) -> Option<(u64, u64)> {
    // address perms offset dev inode path (the path may hold spaces: the rest)
    let mut fields = line.splitn(6, ' ');
    let (range, perms) = (fields.next()?, fields.next()?);
    let path = fields.nth(3)?.trim_start();
    if perms.as_bytes().get(1) != Some(&b'-') || std::path::Path::new(path) != file {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    (start < end).then_some((start, end))
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise_pageout(start: u64, end: u64) -> std::io::Result<()> {
    let (Ok(addr), Ok(len)) = (usize::try_from(start), usize::try_from(end - start)) else {
        return Ok(());
    };
    // SAFETY: `MADV_PAGEOUT` is advice about residency, not about contents: the
    // kernel may reclaim the range's pages, and the next access faults the same bytes
    // back in. The range is a whole mapping the kernel listed in /proc/self/maps, of
    // the executable file and without write access, so its pages are clean file pages
    // that no code of this process changes; nothing is unmapped, and no Rust
    // reference's target changes value.
    let ret = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_PAGEOUT) };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How long after a node is ready its executable's pages are released a second
/// time: work that follows readiness (the first checkpoint after a commit log replay,
/// the first requests) faults start-up code in again.
pub const SETTLE_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// [`purge_in_background`] and [`release_executable_pages`], logged: what a node does
/// once it is ready, and once more [`SETTLE_AGAIN_AFTER`] later (on a task of the
/// current Tokio runtime).
pub fn settle_after_start() {
    if let Err(error) = purge_in_background() {
        tracing::warn!(%error, "jemalloc background purging is off: RSS may stay high after a burst");
    }
    release_logged();
    tokio::spawn(async {
        tokio::time::sleep(SETTLE_AGAIN_AFTER).await;
        release_logged();
    });
}

fn release_logged() {
    #[cfg(target_os = "linux")]
    {
        // The resident set is read (from /proc) only for the debug line.
        let rss = || {
            tracing::enabled!(tracing::Level::DEBUG)
                .then(crate::metrics::resident_bytes)
                .flatten()
        };
        let before = rss();
        match release_executable_pages() {
            Ok(advised) => tracing::debug!(
                advised_bytes = advised,
                rss_before = before,
                rss_after = rss(),
                "released the start-up pages of the executable"
            ),
            Err(error) => {
                tracing::debug!(%error, "could not release the start-up pages of the executable");
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn rss_file_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("Linux has it");
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .expect("/proc/self/status has RssFile")
    }

    #[test]
    fn releasing_the_executable_pages_shrinks_the_file_backed_resident_set() {
        let before = rss_file_kib();
        let advised = release_executable_pages().expect("madvise works on this kernel");
        let after = rss_file_kib();
        assert!(advised > 0, "the test binary has read-only mappings");
        assert!(after < before, "RssFile {before} kB -> {after} kB");
    }

    /// In this test binary Rust allocates with the C library's `malloc` (no
    /// jemalloc): blocks of a page each, freed, are what a freed SQLite page cache
    /// leaves in a glibc arena.
    #[cfg(target_env = "gnu")]
    #[test]
    fn trimming_the_c_heap_gives_freed_blocks_back() {
        // Another test trimming at the same moment could take this one's pages
        // first: three tries.
        let released = (0..3).any(|_| {
            std::thread::spawn(|| {
                let blocks: Vec<Box<[u8]>> = (0..8_192)
                    .map(|i| vec![u8::try_from(i % 251).unwrap_or(0); 4_000].into_boxed_slice())
                    .collect();
                let touched: u64 = blocks.iter().map(|b| u64::from(b[0])).sum();
                drop(blocks);
                assert!(touched > 0);
                trim_c_heap()
            })
            .join()
            .expect("the thread finishes")
        });
        assert!(released, "32 MB of freed blocks, and nothing given back");
    }

    #[test]
    fn only_read_only_mappings_of_the_file_are_picked() {
        let exe = std::path::Path::new("/usr/bin/readstate");
        let pick = |line: &str| read_only_mapping_of(line, exe);
        assert_eq!(
            pick("55d0a000-55d0b000 r-xp 00001000 fd:01 42 /usr/bin/readstate"),
            Some((0x55d0_a000, 0x55d0_b000))
        );
        assert_eq!(
            pick("55d0a000-55d0b000 r--p 00001000 fd:01 42                 /usr/bin/readstate"),
            Some((0x55d0_a000, 0x55d0_b000))
        );
        assert_eq!(
            pick("55d0a000-55d0b000 rw-p 00001000 fd:01 42 /usr/bin/readstate"),
            None
        );
        assert_eq!(
            pick("55d0a000-55d0b000 r-xp 00000000 fd:01 43 /usr/lib/libc.so.6"),
            None
        );
        assert_eq!(
            pick("7ffd0000-7ffd1000 rw-p 00000000 00:00 0 [stack]"),
            None
        );
        assert_eq!(pick("7ffd0000-7ffd1000 r--p 00000000 00:00 0 "), None);
    }
}
