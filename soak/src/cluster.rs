//! A Postgres cluster of the soak's own: `initdb` into a temporary directory,
//! on a free port, so that restarting it touches no other test's database.
//!
//! initdb refuses to run as root: as root every Postgres command runs as the
//! `postgres` user (`runuser`), which owns the directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};

pub struct Cluster {
    bindir: PathBuf,
    /// The temporary directory: the data directory, the socket and the log.
    root: PathBuf,
    datadir: PathBuf,
    log: PathBuf,
    pub port: u16,
    run_as: Option<String>,
    running: bool,
    /// Where the server log is copied when the cluster goes.
    keep_log: PathBuf,
}

impl Cluster {
    /// A new cluster, not started.
    pub fn create(keep_log: &Path) -> anyhow::Result<Self> {
        let bindir = postgres_bindir()?;
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let run_as = if unsafe { libc::geteuid() } == 0 {
            let known = Command::new("id").args(["-u", "postgres"]).output();
            if !known.is_ok_and(|o| o.status.success()) {
                bail!(
                    "running as root, and initdb refuses root: there is no postgres user to run it as"
                );
            }
            Some("postgres".to_owned())
        } else {
            None
        };
        let root =
            std::env::temp_dir().join(format!("hls-soak-{}", integration_tests::random_suffix()));
        std::fs::create_dir(&root).with_context(|| root.display().to_string())?;
        let cluster = Self {
            datadir: root.join("data"),
            log: root.join("postgres.log"),
            port: crate::procs::free_port()?,
            bindir,
            root,
            run_as,
            running: false,
            keep_log: keep_log.to_owned(),
        };
        if let Some(user) = &cluster.run_as {
            check(
                Command::new("chown")
                    .arg(format!("{user}:"))
                    .arg(&cluster.root)
                    .output()?,
                "chown the cluster directory",
            )?;
        }
        let initdb = cluster
            .command("initdb")
            .arg("-D")
            .arg(&cluster.datadir)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .context("run initdb")?;
        check(initdb, "initdb")?;
        // fsync off: a killed server loses nothing the kernel holds, and the soak's
        // faults are process faults; synchronous_commit stays on, as in production,
        // so that a committed row survives the crash restart.
        let settings = format!(
            "\n# hls soak\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nmax_connections = 100\nlog_min_messages = warning\n",
            cluster.port,
            cluster.root.display()
        );
        let conf = cluster.datadir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str(&settings);
        std::fs::write(&conf, text)?;
        Ok(cluster)
    }

    pub fn pg_ctl(&self) -> PathBuf {
        self.bindir.join("pg_ctl")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    pub fn run_as(&self) -> Option<&str> {
        self.run_as.as_deref()
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    /// Starts it and waits until it accepts connections.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let output = self
            .command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(&self.datadir)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "120"])
            .output()?;
        check(output, "pg_ctl start").with_context(|| self.log_tail())?;
        self.running = true;
        Ok(())
    }

    /// `pg_ctl stop -m <mode>`: `fast` (clients disconnected, clean shutdown) or
    /// `immediate` (every process quits at once; the start recovers from WAL).
    pub fn stop(&mut self, mode: &str) -> anyhow::Result<()> {
        let output = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.datadir)
            .args(["-m", mode, "-w", "-t", "120"])
            .output()?;
        self.running = false;
        check(output, "pg_ctl stop")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("the server log ends:\n{}", crate::procs::tail(&text, 20))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop("immediate");
        }
        let _ = std::fs::copy(&self.log, &self.keep_log);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn check(output: Output, what: &str) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `pg_config --bindir` when it holds initdb, else the newest /usr/lib/postgresql/*/bin.
fn postgres_bindir() -> anyhow::Result<PathBuf> {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no Postgres server binaries: neither `pg_config --bindir` nor /usr/lib/postgresql/*/bin has initdb")
}
