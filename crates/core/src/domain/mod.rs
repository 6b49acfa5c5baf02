//! The domain: what a granule, a tile, a CDSE product and a push notification
//! are, and how they are read. Pure functions and types only: no I/O, no
//! environment, no clock; may use nothing else of this crate.

pub mod error_body;
pub mod granule;
pub mod notification;
pub mod product;
pub mod text;
pub mod tiles;
