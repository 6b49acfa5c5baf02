//! The use cases: the record-and-queue hand-off, the day fetch with its retry
//! policy and deadline, and the completeness audit. They may use the domain and
//! the adapters (through their traits, so tests can stand in for them).

pub mod audit;
pub mod day_fetch;
pub mod handoff;
