//! What a request means, below every transport: ids as requests carry them, the
//! request and response shapes, the parsing of writes (batch ops and ingest events),
//! and the problem table every error maps through. HTTP, NATS and the live event
//! streams are adapters over this module and [`crate::service`]; none of them
//! imports another.

pub mod dto;
pub mod ids;
pub mod ops;
pub mod problem;
