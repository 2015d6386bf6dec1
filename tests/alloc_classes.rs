//! The cache's byte budget counts each allocation as what jemalloc really hands out
//! (`readstate::domain::allocated`). This binary allocates with jemalloc, as the
//! service does, and checks the function against jemalloc's own usable size: every
//! size up to 4 KiB, then a geometric sample up to 4 MiB.
#![allow(unsafe_code)]

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[test]
fn allocated_is_jemallocs_usable_size() {
    let mut wrong = Vec::new();
    let mut n = 1usize;
    while n <= 4 << 20 {
        let buf: Vec<u8> = Vec::with_capacity(n);
        // SAFETY: `buf` owns a live allocation of `n` bytes (n > 0) made by the global
        // allocator, which is jemalloc in this binary; usable_size only reads
        // jemalloc's metadata of that allocation, which `buf` keeps alive until after
        // the call.
        let real = unsafe { tikv_jemallocator::usable_size(buf.as_ptr()) };
        let ours = readstate::domain::allocated(n);
        if real != ours {
            wrong.push((n, real, ours));
        }
        n += if n < 4096 { 1 } else { n / 97 + 1 };
    }
    assert!(
        wrong.is_empty(),
        "(asked, jemalloc, ours): {:?}",
        &wrong[..wrong.len().min(20)]
    );
}
