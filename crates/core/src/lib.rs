//! Everything the HLS Sentinel-2 link fetchers share that is not Lambda, in
//! three layers: [`domain`] (pure types and parsing), [`adapters`] (catalogue,
//! store, queue, secrets, telemetry) and [`use_cases`] (hand-off, day fetch,
//! audit). [`config`] holds the typed settings pieces the binaries read once.

pub mod adapters;
pub mod config;
pub mod domain;
pub mod use_cases;

pub use adapters::queue::{BatchError, DownloadQueue, QueueError, SqsQueue};
pub use adapters::secret::Password;
pub use adapters::store::{FetchCursor, FoundBy, GranuleCount, GranuleStore, StoreError};
pub use domain::granule::{Granule, InvalidGranule, ProductFields};
pub use domain::tiles::TileSet;
pub use use_cases::handoff::{Handoff, RecordError, Redelivery};
