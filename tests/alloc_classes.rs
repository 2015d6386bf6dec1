//! The cache's byte budget counts each allocation as what jemalloc really hands out
//! (`readstate::domain::allocated`). This binary allocates with jemalloc, as the
//! service does, and checks the function against jemalloc's own usable size: every
//! size up to 4 KiB, then a geometric sample up to 4 MiB. It also checks that SQLite,
//! once `main`'s first call has run, allocates with jemalloc too.
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

/// `readstate::store::sqlite::use_jemalloc`, as `main` calls it: SQLite's pages then
/// count in jemalloc's allocated bytes. Nothing in this binary uses SQLite before
/// (the other test allocates at most 4 MiB at a time, never with SQLite), and with
/// the C library's allocator jemalloc's count would not grow by SQLite's 20 MB.
#[test]
fn sqlite_allocates_with_jemalloc_once_main_asks() {
    use sqlx::{Connection, SqliteConnection};
    use tikv_jemalloc_ctl::{epoch, stats};

    assert!(
        readstate::store::sqlite::use_jemalloc(),
        "SQLite takes the allocator before its first use"
    );
    assert!(
        readstate::store::sqlite::use_jemalloc(),
        "and says so again"
    );
    let allocated = || {
        epoch::advance().expect("jemalloc's statistics epoch");
        stats::allocated::read().expect("jemalloc's allocated bytes")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mut db = SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("an in-memory database");
        sqlx::query("PRAGMA cache_size = -65536")
            .execute(&mut db)
            .await
            .expect("cache size");
        let before = allocated();
        // 20,000 blobs of 1,000 bytes: about 20 MB of pages, which an in-memory
        // database keeps in its page cache, allocated by SQLite alone.
        sqlx::raw_sql(
            "CREATE TABLE t (x BLOB); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
             INSERT INTO t SELECT randomblob(1000) FROM n",
        )
        .execute(&mut db)
        .await
        .expect("insert");
        let grown = allocated().saturating_sub(before);
        assert!(
            grown > 15 << 20,
            "jemalloc's allocated bytes grew by {grown} while SQLite stored 20 MB"
        );
        db.close().await.expect("close");
    });
}
