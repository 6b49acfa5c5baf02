//! The binary refuses to start without notification credentials, saying what to set,
//! both as the local server and under the Lambda runtime.

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_link-subscription-handler"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run the binary");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn serve_refuses_to_start_without_credentials() {
    let (success, stderr) = run(
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
            ("TO_DOWNLOAD_SQS_QUEUE_URL", "http://127.0.0.1:1/1/q"),
        ],
    );
    assert!(!success);
    assert!(stderr.contains("NOTIFICATION_USERNAME"), "{stderr}");
    assert!(
        stderr.contains("hls-s2-downloader-serverless/<STAGE>/esa-subscription-credentials"),
        "{stderr}"
    );
}

#[test]
fn the_lambda_refuses_to_start_with_half_the_credentials() {
    let (success, stderr) = run(
        &[],
        &[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:1"),
            ("NOTIFICATION_USERNAME", "esa"),
        ],
    );
    assert!(!success);
    assert!(
        stderr.contains("NOTIFICATION_USERNAME is set but NOTIFICATION_PASSWORD is not"),
        "{stderr}"
    );
}

#[test]
fn the_password_is_never_printed() {
    // Credentials are fine; the missing queue URL stops the start after they were read.
    let (success, stderr) = run(
        &["serve"],
        &[
            ("NOTIFICATION_USERNAME", "esa"),
            ("NOTIFICATION_PASSWORD", "hunter2-secret"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    assert!(!success);
    assert!(stderr.contains("TO_DOWNLOAD_SQS_QUEUE_URL"), "{stderr}");
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");
}
