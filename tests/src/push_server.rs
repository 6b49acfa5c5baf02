//! `link-subscription-handler serve` as a process of its own on a free port,
//! for the tests that need the real binary (killed mid-request, or posted to
//! by `cdse-subscription test`).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running `serve`, killed when dropped.
pub struct PushServer {
    child: Option<Child>,
    pub port: u16,
}

impl PushServer {
    /// Starts `bin serve` with `env` on top of the test's environment (minus
    /// the Lambda runtime and `STAGE`, which would change where settings come
    /// from) and waits until it listens.
    pub fn start(bin: &Path, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env_remove("STAGE")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} serve: {e}", bin.display()));
        let mut server = Self {
            child: Some(child),
            port,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                panic!("serve exited before listening: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "serve did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `http://127.0.0.1:<port>/events`.
    pub fn events_url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    /// SIGKILL, as a crash would end it, and waits for it off the runtime's threads.
    pub async fn kill(mut self) {
        let mut child = self.child.take().expect("the process");
        child.kill().expect("SIGKILL");
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
    }
}

impl Drop for PushServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
