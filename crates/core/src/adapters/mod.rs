//! The adapters: the CDSE catalogue, the Postgres store, the SQS queue, Secrets
//! Manager, logs and metrics, each behind a small trait or type. They may use the
//! domain, never the use cases.

pub mod catalogue;
pub mod logging;
pub mod metrics;
pub mod queue;
pub mod secret;
pub mod store;
