//! The 30-second soak, inside `make test` so that `make soak` cannot rot: the
//! same program, schedule and checks, with short outages and a short lease. It
//! brings its own Postgres cluster and queue server, so its restarts touch no
//! other test; `.config/nextest.toml` runs it alone, so that it neither slows
//! other tests down nor is slowed by them.

use std::path::PathBuf;
use std::process::Command;

const SOAK: &str = env!("CARGO_BIN_EXE_soak");

#[test]
fn thirty_seconds_of_load_and_faults_lose_nothing() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("soak-{}", integration_tests::random_suffix()));
    let output = Command::new(SOAK)
        .args([
            "--duration-seconds",
            "30",
            "--queue-outage-seconds",
            "3",
            "--postgres-down-seconds",
            "1",
            "--lease-seconds",
            "5",
            "--settle-timeout-seconds",
            "120",
        ])
        .arg("--out-dir")
        .arg(&out)
        .output()
        .expect("run the soak");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the soak failed ({}); its output, logs and history are in {}\n{stdout}\n{stderr}",
        output.status,
        out.display()
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let figures = &report["figures"];
    // The checks passed (the exit status says so); these say the run was a real one.
    assert_eq!(report["lost"], 0, "{stdout}");
    assert_eq!(figures["outages_survived"], 6, "{stdout}");
    assert!(
        figures["requests"]["total"].as_u64().unwrap() > 1_000,
        "{stdout}"
    );
    assert!(
        figures["requests"]["by_answer"]["503"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "no outage was seen by the clients: {stdout}"
    );
    assert!(
        figures["fetch"]["days_completed"].as_u64().unwrap() >= 2,
        "{stdout}"
    );
    assert!(report["checks"].as_array().unwrap().len() >= 12);
    std::fs::remove_dir_all(&out).ok();
}
