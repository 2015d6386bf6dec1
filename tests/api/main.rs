//! Black-box API tests: the real `App` on port 0 with fresh storage per test (SQLite,
//! or PostgreSQL with `READSTATE_TEST_STORAGE=postgres`), talked to over the wire only
//! (STYLE.md §9). With `READSTATE_TEST_TRANSPORT=grpc` the typed calls go through
//! the gRPC API instead (see `grpc_transport.rs`); `grpc.rs` tests what only gRPC has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod grpc_transport;
mod helpers;
#[path = "../support/mod.rs"]
mod support;

mod access;
mod ack_all;
mod acks;
mod batch;
mod browser;
mod channels;
mod durability_modes;
mod errors;
mod events;
mod grpc;
mod hostile;
mod ids;
mod join_leave;
mod limits;
mod memory_budget;
mod messages;
mod ops_endpoints;
mod read_states;
mod readers;
mod summaries;
mod threads_groups;
mod unread;
mod walkthrough;
