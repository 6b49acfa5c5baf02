//! `link-subscription-handler`: the Lambda behind API Gateway when started by
//! the Lambda runtime, else a command line (`serve`, `migrate`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hls_core::GranuleStore;
use hls_core::adapters::logging::{self, LogSettings};
use hls_core::config::{self, Vars};
use link_subscription_handler::settings::{self, MigrateSettings, Settings};
use link_subscription_handler::{Subscription, lambda_service, router, serve};

#[derive(Parser)]
#[command(
    version,
    about = "Receives CDSE push notifications and queues new granules"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves POST /events locally, with the same environment settings as the Lambda.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Applies the database schema.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The environment is read once, here; everything below gets its settings.
    let vars = settings::environment();
    let log = LogSettings::read(&vars);
    logging::init(&log);
    if log.in_lambda {
        let result = run_lambda(&vars).await;
        log_failure(&result);
        return result;
    }
    let result = run(Cli::parse().command, &vars).await;
    log_failure(&result);
    result
}

fn log_failure(result: &anyhow::Result<()>) {
    if let Err(error) = result {
        tracing::error!(
            error = format!("{error:#}"),
            "link-subscription-handler failed"
        );
    }
}

async fn run_lambda(vars: &Vars) -> anyhow::Result<()> {
    // Once per execution environment; a configuration error stops the start.
    let subscription = Subscription::new(Settings::read(vars)?).await?;
    lambda_http::run(lambda_service(router(Arc::new(subscription))))
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

async fn run(command: Command, vars: &Vars) -> anyhow::Result<()> {
    match command {
        Command::Serve { listen } => {
            let subscription = Subscription::new(Settings::read(vars)?).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            tracing::info!(%listen, "serving POST /events");
            serve(listener, router(Arc::new(subscription))).await?;
            Ok(())
        }
        Command::Migrate => {
            let settings = MigrateSettings::read(vars)?;
            let aws = config::aws_sdk_config(settings.aws_attempt_timeout).await;
            let pool = settings.database.connect(&aws).await?;
            GranuleStore::new(pool).migrate().await?;
            tracing::info!("schema is up to date");
            Ok(())
        }
    }
}
