//! Everything the HLS Sentinel-2 link fetchers share that is not Lambda:
//! the granule model, the tile set, the store, the queue and configuration.

pub mod catalogue;
pub mod config;
pub mod day_fetch;
pub mod error_body;
pub mod granule;
pub mod logging;
pub mod notification;
pub mod product_entity;
pub mod queue;
pub mod secret;
pub mod store;
pub mod subscriptions;
pub mod tiles;

pub use granule::{Granule, InvalidGranule, ProductFields};
pub use queue::{DownloadQueue, QueueError, SqsQueue};
pub use secret::Password;
pub use store::{FetchCursor, GranuleCount, GranuleStore, RecordError, StoreError};
pub use tiles::TileSet;
