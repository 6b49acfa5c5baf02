//! The processes the soak starts, and the guarantee that none outlives it.
//!
//! Every child is killed and the Postgres cluster stopped and removed when the
//! soak ends, fails or panics (`Drop`), or is interrupted (SIGINT/SIGTERM). For
//! the one case no code of ours runs, the soak itself killed with SIGKILL (a
//! test runner's timeout), a reaper, a shell in a process group of its own,
//! waits for the soak to die and then kills the children listed in the pid file
//! and stops the cluster.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::RngExt;

/// Sends `signal` to a child of ours.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid we started; a stale pid only fails with ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// A port nobody uses now, below the kernel's ephemeral range: a server the
/// soak stops and starts again on the same port (Postgres, the queue server)
/// must find it free again, and the kernel never hands such a port to some
/// other process's outgoing connection meanwhile.
pub fn free_port() -> anyhow::Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 20_100 {
        for _ in 0..200 {
            let port = rand::rng().random_range(20_000..ephemeral_low);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts connections on `port`, while `child` lives.
pub fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{what} exited ({status}) before listening; its log: {}",
                log.display()
            );
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "{what} did not listen on {port} within 60 s; its log: {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// `VmHWM` (peak resident set) and `VmRSS` of a live process, in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// The last lines of a log, for an error message.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The reaper: cleans up after a soak that was killed outright. It reads a pid
/// file that lists the children alive right now (a child is listed from its
/// start until it has been waited for, so no pid in it can belong to anyone else).
pub struct Reaper {
    child: Mutex<Child>,
    pid_file: PathBuf,
    live: Mutex<BTreeSet<u32>>,
}

const REAPER: &str = r#"
soak=$1 pid_file=$2 pg_ctl=$3 datadir=$4 run_as=$5 root=$6
while kill -0 "$soak" 2>/dev/null; do sleep 1; done
# The soak is gone without cleaning up: whatever it left running goes too.
if [ -f "$pid_file" ]; then
  while read -r pid; do kill -CONT "$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null; done < "$pid_file"
fi
if [ -n "$run_as" ]; then
  runuser -u "$run_as" -- "$pg_ctl" stop -D "$datadir" -m immediate >/dev/null 2>&1
else
  "$pg_ctl" stop -D "$datadir" -m immediate >/dev/null 2>&1
fi
rm -rf "$root" "$pid_file"
"#;

impl Reaper {
    pub fn start(
        pid_file: &Path,
        pg_ctl: &Path,
        datadir: &Path,
        run_as: Option<&str>,
        root: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::write(pid_file, "")?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(REAPER)
            .arg("reaper")
            .arg(std::process::id().to_string())
            .arg(pid_file)
            .arg(pg_ctl)
            .arg(datadir)
            .arg(run_as.unwrap_or(""))
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of the soak's process group, so a signal to the group spares it.
            .process_group(0)
            .spawn()
            .context("start the reaper")?;
        Ok(Self {
            child: Mutex::new(child),
            pid_file: pid_file.to_owned(),
            live: Mutex::default(),
        })
    }

    /// A child started: killed if the soak dies.
    pub fn watch(&self, pid: u32) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.insert(pid);
        self.write(&live);
    }

    /// A child waited for: its pid may now be anyone's.
    pub fn forget(&self, pid: u32) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.remove(&pid);
        self.write(&live);
    }

    fn write(&self, live: &BTreeSet<u32>) {
        let text: String = live.iter().map(|pid| format!("{pid}\n")).collect();
        let _ = std::fs::write(&self.pid_file, text);
    }

    /// Kills every child still listed (they are ours: none has been waited for).
    pub fn kill_all(&self) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        for &pid in live.iter() {
            signal(pid, libc::SIGCONT);
            signal(pid, libc::SIGKILL);
        }
    }

    /// The soak cleaned up itself: the reaper is not needed.
    pub fn dismiss(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
    }
}
