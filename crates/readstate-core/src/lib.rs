//! readstate: what every user has read in every channel, and what is unread.
//!
//! - [`domain`]: the pure engine (ids, channel windows, read states, derived fields).
//! - [`cache`]: the memory-budgeted cache of users and channels.
//! - [`store`]: durable storage (SQLite) behind the `Store` trait.
//! - [`api`]: what a request means, below every transport ([`http`], [`grpc`], [`ingest`]).
//! - [`service`]: the operations every transport calls, with every limit checked once.
//! - `readstate bench` (the load tool) is the crate `readstate_bench`, which depends on this one.

pub mod api;
pub mod auth;
pub mod background;
pub mod backoff;
pub mod cache;
pub mod commit;
pub mod domain;
pub mod footprint;
pub mod limits;
pub mod metrics;
pub mod secret;
pub mod service;
pub mod store;
pub mod wal;

/// Renders an error with its whole cause chain (`a: b: c`), for logs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
pub mod app;
pub mod backup;
pub mod config;
pub mod grpc;
pub mod http;
pub mod ingest;
pub mod live;
pub mod telemetry;
