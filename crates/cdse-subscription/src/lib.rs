//! `cdse-subscription`: the operator's commands for the CDSE push subscription
//! that posts to `link-subscription-handler`'s `POST /events`.
//!
//! [`token`] gets and keeps the identity service's tokens, [`api`] is the
//! Subscriptions API client and its model (`docs/cdse-catalogue.md`, "Subscriptions"), [`commands`] the
//! subcommands, and [`settings`] the one place the environment is read.
//! Request bodies, forms, URLs and answers are built and read by pure
//! functions; the clients only add HTTP.

pub mod api;
pub mod commands;
pub mod error;
pub mod settings;
pub mod token;

use std::time::Duration;

pub use error::{Service, SubscriptionsError};

/// One call to CDSE, identity or Subscriptions, takes at most this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client for CDSE calls: bounded connect time, our user agent.
pub fn http_client() -> Result<reqwest::Client, SubscriptionsError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!(
            "hls-s2-cdse-subscription/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| SubscriptionsError::Invalid(format!("HTTP client: {e}")))
}
