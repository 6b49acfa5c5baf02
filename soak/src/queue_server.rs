//! The SQS-compatible server: `../shared/tools/fake_sqs.py` (fast, so that its
//! own speed is not what the soak measures) behind `durable_sqs.py`, which keeps
//! a journal so that a kill and restart on the same port loses no message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::sync::Arc;

use anyhow::Context;

use crate::procs::Reaper;

pub struct QueueServer {
    script: PathBuf,
    fake_sqs: PathBuf,
    journal: PathBuf,
    log: PathBuf,
    pub port: u16,
    send_latency_ms: u64,
    child: Option<Child>,
    reaper: Arc<Reaper>,
}

impl QueueServer {
    pub fn new(
        fake_sqs: &Path,
        out_dir: &Path,
        send_latency_ms: u64,
        reaper: Arc<Reaper>,
    ) -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("durable_sqs.py");
        anyhow::ensure!(
            fake_sqs.exists(),
            "no fake SQS server at {} (../shared/tools/fake_sqs.py from the project root; --fake-sqs names another)",
            fake_sqs.display()
        );
        Ok(Self {
            script,
            fake_sqs: fake_sqs.to_owned(),
            journal: out_dir.join("queue-journal.jsonl"),
            log: out_dir.join("queue.log"),
            port: crate::procs::free_port()?,
            send_latency_ms,
            child: None,
            reaper,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, with the journal's messages) and waits until it listens.
    pub fn start(&mut self) -> anyhow::Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new("python3")
            .arg(&self.script)
            .arg("--fake-sqs")
            .arg(&self.fake_sqs)
            .arg("--journal")
            .arg(&self.journal)
            .args(["--port", &self.port.to_string()])
            .env("FAKE_SQS_SEND_LATENCY_MS", self.send_latency_ms.to_string())
            .env_remove("FAKE_SQS_FAIL_SENDS_AFTER")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start the queue server (python3)")?;
        self.reaper.watch(child.id());
        let pid = child.id();
        if let Err(error) =
            crate::procs::wait_for_port(self.port, &mut child, "the queue server", &self.log)
        {
            let _ = child.kill();
            let _ = child.wait();
            self.reaper.forget(pid);
            return Err(error);
        }
        self.child = Some(child);
        Ok(pid)
    }

    /// SIGKILL: what it held in memory survives only in the journal.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::procs::signal(child.id(), libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
            self.reaper.forget(child.id());
        }
    }

    /// SIGSTOP: connections are accepted by the kernel and never answered.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            crate::procs::signal(child.id(), libc::SIGSTOP);
        }
    }

    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            crate::procs::signal(child.id(), libc::SIGCONT);
        }
    }
}

impl Drop for QueueServer {
    fn drop(&mut self) {
        self.kill();
    }
}
