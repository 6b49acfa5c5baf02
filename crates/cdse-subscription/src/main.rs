//! `cdse-subscription`: creates, lists, pauses, resumes, terminates and tests
//! the CDSE push subscription. Output on stdout; an error is one line on
//! stderr and exit status 1 (a usage error is clap's, status 2).

use cdse_subscription::commands::{self, SubscriptionCommand};
use cdse_subscription::settings::{self, Settings};
use clap::Parser;
use hls_core::adapters::logging::{self, LogSettings};

#[derive(Parser)]
#[command(
    version,
    about = "Manages the CDSE push subscription that posts to link-subscription-handler"
)]
struct Cli {
    #[command(subcommand)]
    command: SubscriptionCommand,
}

#[tokio::main]
async fn main() {
    let vars = settings::environment();
    logging::init(&LogSettings::read(&vars));
    let command = Cli::parse().command;
    let result = async {
        let settings = Settings::read(&vars)?;
        commands::run(command, &settings, &mut std::io::stdout()).await
    }
    .await;
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
