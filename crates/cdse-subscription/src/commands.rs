//! The subcommands of `cdse-subscription`: the operator's commands for the
//! CDSE push subscription that posts to `link-subscription-handler`'s endpoint.
//!
//! CDSE allows one running subscription per account, so `create` refuses while
//! one runs and `terminate` without an id ends only the one running. Deciding
//! (which subscription, which URL, what table) is pure; the commands add the
//! calls to CDSE, SSM, Secrets Manager and the endpoint.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use aws_config::SdkConfig;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use hls_core::Password;
use hls_core::config;
use hls_core::domain::error_body::error_message;
use hls_core::domain::notification::{NotifiedProduct, readdress_created};
use hls_core::domain::text::short;
use link_subscription_handler::NotificationCredentials;
use serde_json::Value;
use url::Url;

use crate::SubscriptionsError;
use crate::api::{
    PushSubscriptionRequest, SubscriptionId, SubscriptionInfo, SubscriptionStatus,
    SubscriptionsClient, parse_base_url,
};
use crate::settings::Settings;
use crate::token::{PasswordSource, TokenSession};

/// The real `created` notification the tests use: `cdse-subscription test` sends a copy.
const CREATED_NOTIFICATION: &str = include_str!("../../../tests/fixtures/cdse-push-created.json");
const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Table cells longer than this are cut; `--json` shows everything.
const CELL_WIDTH: usize = 60;

#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Lists the account's subscriptions.
    List {
        /// Print CDSE's description of each subscription as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Creates the push subscription for created Sentinel-2 L1C products.
    Create {
        /// The endpoint CDSE posts to; default: the SSM parameter of STAGE, plus `events`.
        #[arg(long)]
        endpoint: Option<Url>,
        /// Print the request instead of sending it (CDSE is not contacted).
        #[arg(long)]
        dry_run: bool,
    },
    /// Pauses a subscription: CDSE stops posting until it is resumed.
    Pause { id: SubscriptionId },
    /// Resumes a paused subscription.
    Resume { id: SubscriptionId },
    /// Ends a subscription for good; without an id, the only running one.
    Terminate { id: Option<SubscriptionId> },
    /// Posts one made-up `created` notification to the endpoint and reports its status.
    ///
    /// The product (a fresh id on tile 28PHQ, acquired an hour ago) is recorded
    /// and queued like a real one; the downloader will not find it at CDSE.
    Test {
        /// The endpoint to post to; default: the SSM parameter of STAGE, plus `events`.
        #[arg(long)]
        endpoint: Option<Url>,
    },
}

/// Runs one command with the settings read at start-up, writing what the
/// operator reads to `out`.
pub async fn run(
    command: SubscriptionCommand,
    settings: &Settings,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let aws = LazyAws::new(settings.aws_attempt_timeout);
    match command {
        SubscriptionCommand::List { json } => {
            let subscriptions = account_client(settings, &aws).await?.list().await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&subscriptions)?)?;
            } else {
                write!(out, "{}", render_table(&subscriptions))?;
            }
        }
        SubscriptionCommand::Create { endpoint, dry_run } => {
            let endpoint = events_endpoint(endpoint, settings, &aws).await?;
            let NotificationCredentials { username, password } =
                notification_credentials(settings, &aws).await?;
            let request = PushSubscriptionRequest {
                endpoint,
                username,
                password,
            };
            if dry_run {
                writeln!(out, "POST {}", settings.subscriptions_url)?;
                writeln!(out, "Authorization: Bearer <access token>")?;
                writeln!(out, "Content-Type: application/json")?;
                writeln!(out)?;
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&request.masked_body())?
                )?;
                writeln!(
                    out,
                    "(dry run: nothing was sent, and CDSE was not asked whether a subscription is running)"
                )?;
                return Ok(());
            }
            let client = account_client(settings, &aws).await?;
            refuse_if_running(&client.list().await?)?;
            let created = client.create(&request).await?;
            writeln!(
                out,
                "created subscription {}: CDSE posts created Sentinel-2 L1C products to {}",
                created.id, request.endpoint
            )?;
            write!(out, "{}", render_table(std::slice::from_ref(&created)))?;
        }
        SubscriptionCommand::Pause { id } => {
            account_client(settings, &aws)
                .await?
                .set_status(&id, SubscriptionStatus::Paused)
                .await?;
            writeln!(out, "subscription {id} is paused")?;
        }
        SubscriptionCommand::Resume { id } => {
            let client = account_client(settings, &aws).await?;
            let others: Vec<SubscriptionInfo> = client
                .list()
                .await?
                .into_iter()
                .filter(|s| s.id != id.as_str())
                .collect();
            refuse_if_running(&others)?;
            client.set_status(&id, SubscriptionStatus::Running).await?;
            writeln!(out, "subscription {id} is running")?;
        }
        SubscriptionCommand::Terminate { id } => {
            let client = account_client(settings, &aws).await?;
            let id = match id {
                Some(id) => id,
                None => only_running(&client.list().await?)?,
            };
            client.terminate(&id).await?;
            writeln!(out, "subscription {id} is terminated")?;
        }
        SubscriptionCommand::Test { endpoint } => {
            let endpoint = events_endpoint(endpoint, settings, &aws).await?;
            let credentials = notification_credentials(settings, &aws).await?;
            let now = Utc::now();
            let id = random_uuid();
            let (name, notification) = test_notification(&id, now);
            let (status, reason) = post_notification(&endpoint, &credentials, &notification)
                .await
                .with_context(|| format!("cannot post to {endpoint}"))?;
            writeln!(
                out,
                "POST {endpoint}: HTTP {status} {reason}\nproduct {id} {name}"
            )?;
            if !(200..300).contains(&status) {
                bail!("the endpoint answered HTTP {status}: {reason}");
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ pure parts

/// The SSM parameter with the endpoint's base URL (the stack writes it).
pub fn endpoint_parameter_name(stage: &str) -> String {
    format!("/hls-s2-downloader-serverless/{stage}/link_subscription_endpoint_url")
}

/// The events URL from the base URL in SSM (`https://x.example/` → `https://x.example/events`).
pub fn events_url(base: &str) -> anyhow::Result<Url> {
    let base = base.trim().trim_end_matches('/');
    let url = if base.ends_with("/events") {
        base.to_owned()
    } else {
        format!("{base}/events")
    };
    parse_base_url("the endpoint URL", &url).map_err(Into::into)
}

/// `create` and `resume` must not start a second running subscription: CDSE allows one.
pub fn refuse_if_running(subscriptions: &[SubscriptionInfo]) -> anyhow::Result<()> {
    match subscriptions.iter().find(|s| s.is_running()) {
        None => Ok(()),
        Some(running) => bail!(
            "subscription {} is already running (posting to {}); CDSE allows one running \
             subscription per account: pause or terminate it first",
            running.id,
            running.endpoint.as_deref().unwrap_or("no endpoint")
        ),
    }
}

/// The subscription `terminate` ends when no id is given: the only running one.
pub fn only_running(subscriptions: &[SubscriptionInfo]) -> anyhow::Result<SubscriptionId> {
    let running: Vec<&SubscriptionInfo> = subscriptions.iter().filter(|s| s.is_running()).collect();
    match running.as_slice() {
        [one] => Ok(one.id.parse()?),
        [] => bail!(
            "no subscription is running ({} in all); name the one to terminate",
            subscriptions.len()
        ),
        several => bail!(
            "{} subscriptions are running ({}); name the one to terminate",
            several.len(),
            several
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Subscriptions as an aligned table, one per line.
pub fn render_table(subscriptions: &[SubscriptionInfo]) -> String {
    if subscriptions.is_empty() {
        return "no subscriptions\n".into();
    }
    let header = ["ID", "STATUS", "TYPE", "EVENTS", "ENDPOINT", "FILTER"].map(String::from);
    let rows: Vec<[String; 6]> = subscriptions
        .iter()
        .map(|s| {
            let cell = |value: Option<&str>| short(value.unwrap_or("-"), CELL_WIDTH);
            [
                s.id.clone(),
                cell(s.status.as_deref()),
                cell(s.subscription_type.as_deref()),
                cell(Some(s.events.join(",").as_str()).filter(|e| !e.is_empty())),
                cell(s.endpoint.as_deref()),
                cell(s.filter.as_deref()),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(line.join("  ").trim_end());
        table.push('\n');
    }
    table
}

/// A version-4 UUID, the form CDSE gives product ids.
pub fn random_uuid() -> String {
    let bits = (rand::random::<u128>() & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The real `created` notification about a new product `id` on its tile,
/// acquired an hour before `now` and published now. Returns the product name too.
pub fn test_notification(id: &str, now: DateTime<Utc>) -> (String, Value) {
    let acquired = now - chrono::Duration::hours(1);
    let name = format!(
        "S2A_MSIL1C_{}_N0511_R137_T28PHQ_{}.SAFE",
        acquired.format("%Y%m%dT%H%M%S"),
        now.format("%Y%m%dT%H%M%S")
    );
    let mut notification: Value =
        serde_json::from_str(CREATED_NOTIFICATION).expect("the fixture is JSON");
    readdress_created(
        &mut notification,
        &NotifiedProduct {
            id,
            name: &name,
            published: now,
            acquired,
        },
        now,
    );
    notification["SubscriptionId"] = random_uuid().into();
    if let Some(object) = notification.as_object_mut() {
        // The AckId belongs to the real delivery.
        object.remove("AckId");
    }
    (name, notification)
}

// ----------------------------------------------------------------- I/O parts

/// The AWS configuration, loaded on first use: most commands need none.
struct LazyAws {
    attempt_timeout: Duration,
    config: tokio::sync::OnceCell<SdkConfig>,
}

impl LazyAws {
    fn new(attempt_timeout: Duration) -> Self {
        Self {
            attempt_timeout,
            config: tokio::sync::OnceCell::new(),
        }
    }

    async fn get(&self) -> anyhow::Result<&SdkConfig> {
        Ok(self
            .config
            .get_or_init(|| config::aws_sdk_config(self.attempt_timeout))
            .await)
    }
}

/// `--endpoint`, or the base URL the stack keeps in SSM for `STAGE`, plus `events`.
async fn events_endpoint(
    endpoint: Option<Url>,
    settings: &Settings,
    aws: &LazyAws,
) -> anyhow::Result<Url> {
    if let Some(endpoint) = endpoint {
        return Ok(parse_base_url("--endpoint", endpoint.as_str())?);
    }
    let stage = settings.stage.as_deref().with_context(|| {
        format!(
            "no endpoint: pass --endpoint URL, or set STAGE to read {} from SSM",
            endpoint_parameter_name("<STAGE>")
        )
    })?;
    let name = endpoint_parameter_name(stage);
    let output = aws_sdk_ssm::Client::new(aws.get().await?)
        .get_parameter()
        .name(&name)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "SSM parameter {name}: {}",
                aws_sdk_ssm::error::DisplayErrorContext(e)
            )
        })?;
    let base = output
        .parameter
        .and_then(|p| p.value)
        .with_context(|| format!("SSM parameter {name} has no value"))?;
    events_url(&base).with_context(|| format!("SSM parameter {name}"))
}

async fn notification_credentials(
    settings: &Settings,
    aws: &LazyAws,
) -> anyhow::Result<NotificationCredentials> {
    // The error is the handler's own (what to set), kept for the commands that need it.
    let source = settings
        .notification
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(source.load(aws.get().await?).await?)
}

/// The Subscriptions API for the CDSE account the settings (or the operator) name.
async fn account_client(settings: &Settings, aws: &LazyAws) -> anyhow::Result<SubscriptionsClient> {
    let (username, password) = cdse_account(settings, aws).await?;
    let http = crate::http_client()?;
    let session = TokenSession::new(
        http.clone(),
        settings.identity_url.clone(),
        username,
        password,
        settings.token_cache.clone(),
    );
    Ok(SubscriptionsClient::new(
        http,
        settings.subscriptions_url.clone(),
        session,
    ))
}

/// The CDSE account: `CDSE_USERNAME`/`CDSE_PASSWORD`, else the secret
/// `CDSE_CREDENTIALS_SECRET` (`{"username", "password"}`), else a prompt on a
/// terminal. A prompted password is asked for only if a login is needed.
async fn cdse_account(
    settings: &Settings,
    aws: &LazyAws,
) -> anyhow::Result<(String, Box<dyn PasswordSource>)> {
    let account = &settings.account;
    if let (Some(username), Some(password)) = (&account.username, &account.password) {
        return Ok((username.clone(), Box::new(password.clone())));
    }
    if let Some(secret_id) = &account.credentials_secret {
        let [username, password] =
            config::secret_fields(aws.get().await?, secret_id, ["username", "password"]).await?;
        return Ok((username, Box::new(Password::new(password))));
    }
    let terminal = std::io::stdin().is_terminal();
    let username = match account.username.clone() {
        Some(username) => username,
        None if terminal => prompt("CDSE username: ")?,
        None => bail!(no_account_message()),
    };
    match account.password.clone() {
        Some(password) => Ok((username, Box::new(password))),
        None if terminal => Ok((username.clone(), Box::new(PromptPassword(username)))),
        None => bail!(no_account_message()),
    }
}

fn no_account_message() -> String {
    "no CDSE account: set CDSE_USERNAME and CDSE_PASSWORD, or CDSE_CREDENTIALS_SECRET to a \
     Secrets Manager secret with username and password (the Python system's is \
     hls-s2-downloader-serverless/<stage>/copernicus-credentials), or run on a terminal to be asked"
        .into()
}

fn prompt(question: &str) -> anyhow::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    let answer = answer.trim().to_owned();
    if answer.is_empty() {
        bail!("no answer");
    }
    Ok(answer)
}

/// Asks on the terminal, without echo, when a login needs the password.
struct PromptPassword(String);

impl PasswordSource for PromptPassword {
    fn password(&self) -> Result<Password, SubscriptionsError> {
        rpassword::prompt_password(format!("CDSE password for {}: ", self.0))
            .map_err(|e| SubscriptionsError::Password(e.to_string()))
            .and_then(|password| {
                if password.is_empty() {
                    Err(SubscriptionsError::Password("none was given".into()))
                } else {
                    Ok(Password::new(password))
                }
            })
    }
}

/// Posts `notification` as CDSE would; the status and its reason (the error, if any).
async fn post_notification(
    endpoint: &Url,
    credentials: &NotificationCredentials,
    notification: &Value,
) -> anyhow::Result<(u16, String)> {
    let response = reqwest::Client::builder()
        .timeout(TEST_TIMEOUT)
        .build()?
        .post(endpoint.clone())
        .basic_auth(&credentials.username, Some(credentials.password.expose()))
        .json(notification)
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    let reason = if body.is_empty() {
        status.canonical_reason().unwrap_or("").to_owned()
    } else {
        error_message(&body)
    };
    Ok((status.as_u16(), reason))
}

#[cfg(test)]
mod tests {
    use hls_core::domain::notification::ProductNotification;
    use serde_json::json;

    use super::*;

    fn info(id: &str, status: &str) -> SubscriptionInfo {
        serde_json::from_value(json!({
            "Id": id, "Status": status, "SubscriptionType": "push",
            "SubscriptionEvent": ["created"], "NotificationEndpoint": "https://e.example/events",
            "FilterParam": "Collection/Name eq 'SENTINEL-2' and a very long filter that goes on and on",
        }))
        .unwrap()
    }

    #[test]
    fn the_events_url_is_the_ssm_base_plus_events() {
        for base in [
            "https://a.execute-api.us-west-2.amazonaws.com/",
            "https://a.execute-api.us-west-2.amazonaws.com",
            " https://a.execute-api.us-west-2.amazonaws.com/events ",
        ] {
            assert_eq!(
                events_url(base).unwrap().as_str(),
                "https://a.execute-api.us-west-2.amazonaws.com/events"
            );
        }
        assert!(events_url("not a url").is_err());
        assert_eq!(
            endpoint_parameter_name("prod"),
            "/hls-s2-downloader-serverless/prod/link_subscription_endpoint_url"
        );
    }

    #[test]
    fn create_is_refused_while_one_runs_and_names_it() {
        assert!(refuse_if_running(&[]).is_ok());
        assert!(refuse_if_running(&[info("p1", "paused"), info("c1", "cancelled")]).is_ok());
        let error = refuse_if_running(&[info("p1", "paused"), info("r1", "running")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("r1") && error.contains("https://e.example/events"),
            "{error}"
        );
    }

    #[test]
    fn terminate_without_an_id_takes_only_the_one_running() {
        let id = only_running(&[info("p1", "paused"), info("r1", "Running")]).unwrap();
        assert_eq!(id.to_string(), "r1");
        let none = only_running(&[info("p1", "paused")])
            .unwrap_err()
            .to_string();
        assert!(none.contains("no subscription is running"), "{none}");
        let several = only_running(&[info("r1", "running"), info("r2", "running")])
            .unwrap_err()
            .to_string();
        assert!(several.contains("r1, r2"), "{several}");
    }

    #[test]
    fn the_table_aligns_columns_and_cuts_long_cells() {
        let table = render_table(&[info("r1", "running"), info("p-000002", "paused")]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("ID        STATUS   TYPE  EVENTS   ENDPOINT"),
            "{table}"
        );
        assert!(lines[1].starts_with("r1        running  push  created  https://e.example/events"));
        let endpoint_column = lines[0].find("ENDPOINT").unwrap();
        assert_eq!(lines[2].find("https://").unwrap(), endpoint_column);
        assert!(lines[1].ends_with('…'), "{}", lines[1]);
        assert_eq!(render_table(&[]), "no subscriptions\n");
    }

    #[test]
    fn uuids_are_version_4() {
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, random_uuid());
    }

    #[test]
    fn the_test_notification_is_a_recent_product_on_an_allowed_tile() {
        let now = Utc::now();
        let id = random_uuid();
        let (name, notification) = test_notification(&id, now);
        assert!(notification.get("AckId").is_none());
        let ProductNotification::Created(granule) =
            ProductNotification::parse(notification.to_string().as_bytes()).unwrap()
        else {
            panic!("not a created notification");
        };
        assert_eq!(granule.id, id);
        assert_eq!(granule.filename, name);
        assert!(hls_core::TileSet::built_in().contains(&granule.tile_id));
        assert!(granule.begin_position > now - chrono::Duration::hours(2));
    }
}
