//! `cdse-subscription …` run as a process against the CDSE stand-in (identity
//! service and Subscriptions API), moto's SSM and Secrets Manager, and
//! `link-subscription-handler serve` with real Postgres and SQS.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use integration_tests::cdse_stub::{CdseStub, PASSWORD, USERNAME};
use integration_tests::push_server::PushServer;
use integration_tests::{TestDatabase, TestQueue, random_suffix};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cdse-subscription");
const NOTIFICATION_USERNAME: &str = "esa-notifications";
const NOTIFICATION_PASSWORD: &str = "endpoint-secret-42";

/// The command against `stub`, with its own token cache and nothing from the
/// test environment but the AWS endpoint settings.
fn command(stub: &CdseStub, cache: &Path) -> Command {
    let mut command = Command::new(BIN);
    for name in [
        "CDSE_USERNAME",
        "CDSE_PASSWORD",
        "CDSE_CREDENTIALS_SECRET",
        "CDSE_TOKEN_CACHE",
        "CDSE_IDENTITY_URL",
        "CDSE_SUBSCRIPTIONS_URL",
        "NOTIFICATION_USERNAME",
        "NOTIFICATION_PASSWORD",
        "STAGE",
        "DATABASE_URL",
        "AWS_LAMBDA_RUNTIME_API",
        "XDG_CACHE_HOME",
        // The default log level: an error must still be one line.
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    command
        .env("CDSE_IDENTITY_URL", stub.identity_url())
        .env("CDSE_SUBSCRIPTIONS_URL", stub.subscriptions_url())
        .env("CDSE_USERNAME", USERNAME)
        .env("CDSE_PASSWORD", PASSWORD)
        .env("CDSE_TOKEN_CACHE", cache)
        .env("NOTIFICATION_USERNAME", NOTIFICATION_USERNAME)
        .env("NOTIFICATION_PASSWORD", NOTIFICATION_PASSWORD)
        // Not a terminal: nothing is prompted for.
        .stdin(Stdio::null());
    command
}

async fn run(mut command: Command, args: &[&str]) -> Output {
    command.args(args);
    tokio::task::spawn_blocking(move || command.output().expect("run the command"))
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn cache_file() -> PathBuf {
    std::env::temp_dir().join(format!("cdse-tokens-{}.json", random_suffix()))
}

/// A stub, a token cache and the command over both.
struct Setup {
    stub: CdseStub,
    cache: PathBuf,
}

impl Setup {
    async fn new() -> Self {
        Self {
            stub: CdseStub::start().await,
            cache: cache_file(),
        }
    }

    fn command(&self) -> Command {
        command(&self.stub, &self.cache)
    }

    async fn ok(&self, args: &[&str]) -> String {
        let output = run(self.command(), args).await;
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            stderr(&output)
        );
        let printed = format!("{}{}", stdout(&output), stderr(&output));
        assert!(!printed.contains(PASSWORD) && !printed.contains(NOTIFICATION_PASSWORD));
        stdout(&output)
    }

    /// Runs a command that must fail; its one line of error.
    async fn fails(&self, command: Command, args: &[&str]) -> String {
        let output = run(command, args).await;
        assert!(!output.status.success(), "{args:?} succeeded");
        let error = stderr(&output);
        assert_eq!(error.lines().count(), 1, "not one line: {error:?}");
        assert!(error.starts_with("error: "), "{error}");
        assert!(!error.contains(PASSWORD) && !error.contains(NOTIFICATION_PASSWORD));
        error.trim_end().to_owned()
    }
}

fn bearers(stub: &CdseStub) -> Vec<String> {
    stub.api_requests()
        .iter()
        .map(|r| r.authorization().unwrap_or("").to_owned())
        .collect()
}

fn grants(stub: &CdseStub) -> Vec<String> {
    stub.token_requests()
        .iter()
        .map(|r| {
            r.form()
                .into_iter()
                .find(|(k, _)| k == "grant_type")
                .map(|(_, v)| v)
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn list_logs_in_with_the_documented_form_and_prints_a_table() {
    let setup = Setup::new().await;
    setup.stub.add_subscription("3f0f1c2a-run", "running");
    setup.stub.add_subscription("9b1d2e3f-old", "paused");

    let table = setup.ok(&["list"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID"), "{table}");
    for column in ["STATUS", "TYPE", "EVENTS", "ENDPOINT", "FILTER"] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(
        lines[1]
            .starts_with("3f0f1c2a-run  running  push  created  https://old.example.org/events")
    );
    assert!(lines[2].starts_with("9b1d2e3f-old  paused"));

    let token_requests = setup.stub.token_requests();
    assert_eq!(token_requests.len(), 1);
    let login = &token_requests[0];
    assert_eq!(login.method, "POST");
    assert_eq!(
        login.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let form = login.form();
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        pairs,
        [
            ("grant_type", "password"),
            ("username", USERNAME),
            ("password", PASSWORD),
            ("client_id", "cdse-public"),
        ]
    );
    let api = setup.stub.api_requests();
    assert_eq!(api.len(), 1);
    assert_eq!(
        (api[0].method.as_str(), api[0].path.as_str()),
        ("GET", "/odata/v1/Subscriptions/Info")
    );
    assert_eq!(api[0].authorization(), Some("Bearer access-1"));

    let json: Value = serde_json::from_str(&setup.ok(&["list", "--json"]).await).unwrap();
    let ids: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["3f0f1c2a-run", "9b1d2e3f-old"]);
    assert_eq!(json[0]["SubmissionDate"], "2024-09-01T00:00:00.000Z");
}

#[tokio::test]
async fn create_posts_the_hls_push_subscription() {
    let setup = Setup::new().await;
    setup.stub.add_subscription("7a-paused", "paused");
    let endpoint = "https://abc123.execute-api.us-west-2.amazonaws.com/events";

    let printed = setup.ok(&["create", "--endpoint", endpoint]).await;
    let created = setup.stub.subscriptions()[1].clone();
    let id = created["Id"].as_str().unwrap();
    assert!(
        printed.contains(&format!("created subscription {id}")),
        "{printed}"
    );

    let api = setup.stub.api_requests();
    let calls: Vec<(&str, &str)> = api
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("GET", "/odata/v1/Subscriptions/Info"),
            ("POST", "/odata/v1/Subscriptions")
        ]
    );
    let post = &api[1];
    assert_eq!(post.authorization(), Some("Bearer access-1"));
    assert_eq!(post.headers["content-type"], "application/json");
    let body = post.json();
    assert_eq!(body["SubscriptionType"], "push");
    assert_eq!(body["SubscriptionEvent"], json!(["created"]));
    assert_eq!(body["Status"], "running");
    assert_eq!(body["NotificationEndpoint"], endpoint);
    assert_eq!(body["NotificationEpUsername"], NOTIFICATION_USERNAME);
    assert_eq!(body["NotificationEpPassword"], NOTIFICATION_PASSWORD);
    let filter = body["FilterParam"].as_str().unwrap();
    assert!(
        filter.contains("Collection/Name eq 'SENTINEL-2'"),
        "{filter}"
    );
    assert!(filter.contains("Value eq 'S2MSI1C'"), "{filter}");
    assert_eq!(created["Status"], "running");
    assert_eq!(
        setup.stub.token_requests().len(),
        1,
        "one login for both calls"
    );
}

#[tokio::test]
async fn create_refuses_while_one_is_running_and_names_it() {
    let setup = Setup::new().await;
    setup.stub.add_subscription("5c-paused", "paused");
    setup.stub.add_subscription("e4-running", "running");

    let error = setup
        .fails(
            setup.command(),
            &["create", "--endpoint", "https://x.example/events"],
        )
        .await;
    assert!(error.contains("e4-running is already running"), "{error}");
    assert!(error.contains("https://old.example.org/events"), "{error}");
    assert!(
        setup.stub.api_requests().iter().all(|r| r.method == "GET"),
        "nothing but the list was sent"
    );
    assert_eq!(setup.stub.subscriptions().len(), 2);
}

#[tokio::test]
async fn create_dry_run_prints_the_masked_request_and_contacts_nobody() {
    let setup = Setup::new().await;
    let printed = setup
        .ok(&[
            "create",
            "--dry-run",
            "--endpoint",
            "https://x.example/events",
        ])
        .await;
    assert!(
        printed.starts_with(&format!("POST {}\n", setup.stub.subscriptions_url())),
        "{printed}"
    );
    let body_start = printed.find('{').unwrap();
    let body_end = printed.rfind('}').unwrap();
    let body: Value = serde_json::from_str(&printed[body_start..=body_end]).unwrap();
    assert_eq!(body["NotificationEpPassword"], "********");
    assert_eq!(body["NotificationEpUsername"], NOTIFICATION_USERNAME);
    assert_eq!(body["NotificationEndpoint"], "https://x.example/events");
    assert!(setup.stub.requests().is_empty());
}

async fn put_ssm_parameter(name: &str, value: &str) {
    let aws = integration_tests::aws_config().await;
    aws_sdk_ssm::Client::new(&aws)
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .expect("put the SSM parameter");
}

#[tokio::test]
async fn the_endpoint_comes_from_the_stages_ssm_parameter() {
    let setup = Setup::new().await;
    let stage = format!("test{}", random_suffix());
    put_ssm_parameter(
        &format!("/hls-s2-downloader-serverless/{stage}/link_subscription_endpoint_url"),
        "https://abc123.execute-api.us-west-2.amazonaws.com/",
    )
    .await;

    let mut with_stage = setup.command();
    with_stage.env("STAGE", &stage);
    let output = run(with_stage, &["create"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let post = setup.stub.api_requests().pop().unwrap();
    assert_eq!(
        post.json()["NotificationEndpoint"],
        "https://abc123.execute-api.us-west-2.amazonaws.com/events"
    );

    let error = setup.fails(setup.command(), &["test"]).await;
    assert!(
        error.contains("pass --endpoint URL, or set STAGE"),
        "{error}"
    );
    let error = setup
        .fails(
            setup.command(),
            &["create", "--endpoint", "ftp://x.example/events"],
        )
        .await;
    assert!(
        error.contains(r#"--endpoint "ftp://x.example/events": scheme "ftp" is not http(s)"#),
        "{error}"
    );
    let mut unknown_stage = setup.command();
    unknown_stage.env("STAGE", format!("nothing{}", random_suffix()));
    let error = setup.fails(unknown_stage, &["create"]).await;
    assert!(
        error.contains("SSM parameter /hls-s2-downloader-serverless/nothing"),
        "{error}"
    );
}

#[tokio::test]
async fn pause_resume_and_terminate_address_one_subscription() {
    let setup = Setup::new().await;
    setup.stub.add_subscription("aa-1", "running");

    assert_eq!(
        setup.ok(&["pause", "aa-1"]).await,
        "subscription aa-1 is paused\n"
    );
    assert_eq!(setup.stub.subscriptions()[0]["Status"], "paused");
    assert_eq!(
        setup.ok(&["resume", "aa-1"]).await,
        "subscription aa-1 is running\n"
    );
    assert_eq!(setup.stub.subscriptions()[0]["Status"], "running");
    setup.ok(&["terminate", "aa-1"]).await;
    assert!(setup.stub.subscriptions().is_empty());

    let calls: Vec<(String, String, String)> = setup
        .stub
        .api_requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.body))
        .collect();
    let call = |method: &str, body: &str| {
        (
            method.to_owned(),
            "/odata/v1/Subscriptions(aa-1)".to_owned(),
            body.to_owned(),
        )
    };
    let list = (
        "GET".to_owned(),
        "/odata/v1/Subscriptions/Info".to_owned(),
        String::new(),
    );
    assert_eq!(
        calls,
        [
            call("PATCH", r#"{"Status":"paused"}"#),
            list,
            call("PATCH", r#"{"Status":"running"}"#),
            call("DELETE", ""),
        ]
    );
    assert!(bearers(&setup.stub).iter().all(|b| b == "Bearer access-1"));

    // Resuming while another runs would break CDSE's one-running rule.
    setup.stub.add_subscription("bb-paused", "paused");
    setup.stub.add_subscription("cc-running", "running");
    let error = setup.fails(setup.command(), &["resume", "bb-paused"]).await;
    assert!(error.contains("cc-running is already running"), "{error}");
    assert_eq!(setup.stub.subscriptions()[0]["Status"], "paused");
}

#[tokio::test]
async fn terminate_without_an_id_ends_only_the_one_running() {
    let setup = Setup::new().await;
    setup.stub.add_subscription("p-1", "paused");
    let error = setup.fails(setup.command(), &["terminate"]).await;
    assert!(error.contains("no subscription is running"), "{error}");

    setup.stub.add_subscription("r-1", "running");
    setup.stub.add_subscription("r-2", "running");
    let error = setup.fails(setup.command(), &["terminate"]).await;
    assert!(
        error.contains("2 subscriptions are running (r-1, r-2)"),
        "{error}"
    );
    assert_eq!(setup.stub.subscriptions().len(), 3);

    setup.ok(&["terminate", "r-2"]).await;
    assert_eq!(
        setup.ok(&["terminate"]).await,
        "subscription r-1 is terminated\n"
    );
    let left: Vec<Value> = setup
        .stub
        .subscriptions()
        .iter()
        .map(|s| s["Id"].clone())
        .collect();
    assert_eq!(left, [json!("p-1")]);
}

#[tokio::test]
async fn a_token_is_reused_across_commands_then_refreshed_after_expiry() {
    let setup = Setup::new().await;
    setup.ok(&["list"]).await;
    setup.ok(&["list"]).await;
    assert_eq!(grants(&setup.stub), ["password"]);
    assert_eq!(bearers(&setup.stub), ["Bearer access-1", "Bearer access-1"]);

    // Tokens that expire within the client's margin are not offered.
    let setup = Setup::new().await;
    setup.stub.set_token_lifetimes(5, 3600);
    setup.ok(&["list"]).await;
    setup.ok(&["list"]).await;
    assert_eq!(grants(&setup.stub), ["password", "refresh_token"]);
    let refresh = &setup.stub.token_requests()[1];
    let form = refresh.form();
    assert!(
        form.contains(&("refresh_token".into(), "refresh-1".into())),
        "{form:?}"
    );
    assert!(
        form.contains(&("client_id".into(), "cdse-public".into())),
        "{form:?}"
    );
    assert!(!form.iter().any(|(k, _)| k == "password"));
    assert_eq!(bearers(&setup.stub), ["Bearer access-1", "Bearer access-2"]);

    // Without a cache, every command is a new session.
    let setup = Setup::new().await;
    for _ in 0..2 {
        let mut uncached = setup.command();
        uncached.env("CDSE_TOKEN_CACHE", "off");
        assert!(run(uncached, &["list"]).await.status.success());
    }
    assert_eq!(grants(&setup.stub), ["password", "password"]);
}

#[tokio::test]
async fn a_revoked_session_is_replaced_by_a_new_login() {
    let setup = Setup::new().await;
    setup.ok(&["list"]).await;
    setup.stub.revoke_all_tokens();
    setup.ok(&["list"]).await;
    // The cached token is refused, so is its refresh token; the password logs in again.
    assert_eq!(
        grants(&setup.stub),
        ["password", "refresh_token", "password"]
    );
    assert_eq!(
        bearers(&setup.stub),
        ["Bearer access-1", "Bearer access-1", "Bearer access-2"]
    );
}

#[tokio::test]
async fn cdse_errors_become_one_line_with_cdses_own_message() {
    let setup = Setup::new().await;
    let unknown = "991c4730-cf6f-432a-9f6c-47be0230ff45";
    assert_eq!(
        setup.fails(setup.command(), &["pause", unknown]).await,
        format!(
            "error: CDSE found no such subscription (HTTP 404 from the Subscriptions API): \
             Subscription with id {unknown} not found."
        )
    );

    let skip_error = std::fs::read_to_string(format!(
        "{}/../../tests/fixtures/cdse-odata-error-skip.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    for (status, body, expected) in [
        (
            422,
            skip_error.as_str(),
            "CDSE rejected the request (HTTP 422 from the Subscriptions API): \
             query.$skip: Input should be less than or equal to 10000",
        ),
        (
            403,
            r#"{"detail":"Not enough permissions"}"#,
            "CDSE does not allow this for the account (HTTP 403 from the Subscriptions API): \
             Not enough permissions",
        ),
        (
            429,
            r#"{"error":"WAF","message":"Rate limit exceeded","status":429}"#,
            "HTTP 429 from the Subscriptions API): Rate limit exceeded",
        ),
        (
            503,
            "<html>\n<body>Service Temporarily Unavailable</body>\n</html>",
            "CDSE failed; try again later (HTTP 503 from the Subscriptions API): \"<html>",
        ),
    ] {
        setup.stub.answer_next(status, body);
        let error = setup.fails(setup.command(), &["list"]).await;
        assert!(error.contains(expected), "{error}\nexpected: {expected}");
    }

    let mut wrong_password = setup.command();
    wrong_password
        .env("CDSE_PASSWORD", "not-it")
        .env("CDSE_TOKEN_CACHE", "off");
    assert_eq!(
        setup.fails(wrong_password, &["list"]).await,
        "error: CDSE refused the login (check CDSE_USERNAME and CDSE_PASSWORD) \
         (HTTP 401 from the identity service): Invalid user credentials"
    );

    let requests_before = setup.stub.requests().len();
    // A usage error, from the argument parser: nothing is sent.
    let output = run(setup.command(), &["terminate", "x)/../Products"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("is not a subscription id"),
        "{}",
        stderr(&output)
    );
    assert_eq!(setup.stub.requests().len(), requests_before);

    let mut unreachable = setup.command();
    unreachable
        .env("CDSE_IDENTITY_URL", "http://127.0.0.1:9/token")
        .env("CDSE_TOKEN_CACHE", "off");
    let error = setup.fails(unreachable, &["list"]).await;
    assert!(
        error.contains("cannot reach the CDSE identity service at http://127.0.0.1:9/token"),
        "{error}"
    );

    let mut no_account = setup.command();
    no_account
        .env_remove("CDSE_USERNAME")
        .env_remove("CDSE_PASSWORD");
    let error = setup.fails(no_account, &["list"]).await;
    assert!(
        error.contains("no CDSE account: set CDSE_USERNAME and CDSE_PASSWORD"),
        "{error}"
    );
}

#[tokio::test]
async fn the_account_can_come_from_secrets_manager() {
    let setup = Setup::new().await;
    let secret_name = format!(
        "hls-s2-downloader-serverless/test{}/copernicus-credentials",
        random_suffix()
    );
    let aws = integration_tests::aws_config().await;
    aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name(&secret_name)
        .secret_string(json!({"username": USERNAME, "password": PASSWORD}).to_string())
        .send()
        .await
        .expect("create the secret");
    let mut from_secret = setup.command();
    from_secret
        .env_remove("CDSE_USERNAME")
        .env_remove("CDSE_PASSWORD")
        .env("CDSE_CREDENTIALS_SECRET", &secret_name);
    let output = run(from_secret, &["list"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let form = setup.stub.token_requests()[0].form();
    assert!(form.contains(&("username".into(), USERNAME.into())));
    assert!(form.contains(&("password".into(), PASSWORD.into())));
}

/// The push handler's binary: cargo puts the workspace's binaries in one
/// directory, and this package cannot name another package's binary.
fn handler_bin() -> PathBuf {
    let bin = Path::new(BIN).with_file_name(format!(
        "link-subscription-handler{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        bin.exists(),
        "{} is not built: build the workspace (cargo nextest run --workspace)",
        bin.display()
    );
    bin
}

fn start_serve(db: &TestDatabase, queue: &TestQueue) -> PushServer {
    PushServer::start(
        &handler_bin(),
        &[
            ("DATABASE_URL", db.url().as_str()),
            ("TO_DOWNLOAD_SQS_QUEUE_URL", queue.url.as_str()),
            ("NOTIFICATION_USERNAME", NOTIFICATION_USERNAME),
            ("NOTIFICATION_PASSWORD", NOTIFICATION_PASSWORD),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn subscription_test_against_serve_gets_204_and_records_the_product() {
    let db = TestDatabase::migrated().await;
    let queue = TestQueue::new().await;
    let server = start_serve(&db, &queue);
    let setup = Setup::new().await;
    let endpoint = server.events_url();

    let printed = setup.ok(&["test", "--endpoint", &endpoint]).await;
    assert!(
        printed.starts_with(&format!("POST {endpoint}: HTTP 204 No Content\n")),
        "{printed}"
    );
    let product_line = printed.lines().nth(1).unwrap();
    let mut words = product_line.split(' ').skip(1);
    let (id, name) = (words.next().unwrap(), words.next().unwrap());
    let recorded: (String, String) =
        sqlx::query_as("SELECT filename, tileid FROM granule WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .expect("the product is recorded");
    assert_eq!(recorded, (name.to_owned(), "28PHQ".to_owned()));
    let drained = queue.drain(Duration::from_millis(500)).await;
    assert_eq!(drained.by_id.len(), 1);
    assert_eq!(drained.by_id[id]["filename"], name);
    assert!(setup.stub.requests().is_empty(), "CDSE is not involved");

    // A second test is a different product: also recorded.
    setup.ok(&["test", "--endpoint", &endpoint]).await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM granule")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 2);

    let mut wrong = setup.command();
    wrong.env("NOTIFICATION_PASSWORD", "wrong");
    let error = setup.fails(wrong, &["test", "--endpoint", &endpoint]).await;
    assert_eq!(error, "error: the endpoint answered HTTP 401: unauthorised");
}

/// Runs the command on a pseudo-terminal, answering each prompt in turn;
/// returns everything the terminal showed and whether the command succeeded.
async fn on_terminal(command: Command, answers: &[(&str, &str)]) -> (String, bool) {
    const DRIVER: &str = r#"
import json, os, pty, select, sys, termios, time
answers = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
shown = b""
def read(until=None):
    global shown
    deadline = time.time() + 20
    while time.time() < deadline:
        if until is not None and until in shown:
            return
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            shown += chunk
    if until is not None:
        sys.exit("no prompt %r; the terminal showed %r" % (until, shown))
def echo_off():
    # The master sees the terminal's settings: a password is typed only once echo is off,
    # as a person would after the prompt (the prompt is printed just before echo goes off).
    deadline = time.time() + 20
    while time.time() < deadline:
        if not termios.tcgetattr(fd)[3] & termios.ECHO:
            return
        time.sleep(0.01)
    sys.exit("echo stayed on at %r" % shown)
for prompt, answer in answers:
    read(prompt.encode())
    if "password" in prompt:
        echo_off()
    os.write(fd, answer.encode() + b"\n")
read()
_, status = os.waitpid(pid, 0)
print(json.dumps({"shown": shown.decode(errors="replace"), "ok": os.waitstatus_to_exitcode(status) == 0}))
"#;
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let mut driver = Command::new("python3");
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => driver.env(name, value),
            None => driver.env_remove(name),
        };
    }
    driver
        .arg("-c")
        .arg(DRIVER)
        .arg(serde_json::to_string(answers).unwrap())
        .arg(program)
        .args(args)
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || driver.output().expect("run python3"))
        .await
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        result["shown"].as_str().unwrap().to_owned(),
        result["ok"].as_bool().unwrap(),
    )
}

#[tokio::test]
async fn on_a_terminal_the_account_is_asked_for_and_the_password_never_shown() {
    let setup = Setup::new().await;
    let mut command = setup.command();
    command
        .env_remove("CDSE_USERNAME")
        .env_remove("CDSE_PASSWORD")
        .arg("list");
    let (shown, ok) = on_terminal(
        command,
        &[
            ("CDSE username: ", USERNAME),
            (&format!("CDSE password for {USERNAME}: "), PASSWORD),
        ],
    )
    .await;
    assert!(ok, "{shown}");
    assert!(shown.contains("no subscriptions"), "{shown}");
    assert!(shown.contains(USERNAME), "the username is echoed: {shown}");
    assert!(
        !shown.contains(PASSWORD),
        "the password was echoed: {shown}"
    );
    assert_eq!(grants(&setup.stub), ["password"]);

    // With a usable token in the cache, no password is asked for.
    let mut command = setup.command();
    command.env_remove("CDSE_PASSWORD").arg("list");
    let (shown, ok) = on_terminal(command, &[]).await;
    assert!(ok, "{shown}");
    assert!(!shown.contains("password"), "{shown}");
    assert_eq!(grants(&setup.stub), ["password"]);
}
