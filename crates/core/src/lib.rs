//! Everything the HLS Sentinel-2 link fetchers share that is not Lambda:
//! the granule model, the tile set, the store, the queue, the hand-off that ties
//! them (`record`) and configuration.

pub mod audit;
pub mod catalogue;
pub mod config;
pub mod day_fetch;
pub mod error_body;
pub mod granule;
pub mod logging;
pub mod metrics;
pub mod notification;
pub mod product_entity;
pub mod queue;
pub mod record;
pub mod secret;
pub mod store;
pub mod subscriptions;
pub mod tiles;

pub use granule::{Granule, InvalidGranule, ProductFields};
pub use queue::{BatchError, DownloadQueue, QueueError, SqsQueue};
pub use record::{Handoff, RecordError, Redelivery};
pub use secret::Password;
pub use store::{FetchCursor, FoundBy, GranuleCount, GranuleStore, StoreError};
pub use tiles::TileSet;
