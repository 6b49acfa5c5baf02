//! Child processes measured from the outside: wall time, CPU time and peak RSS.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A child that ran to its end.
#[derive(Debug)]
pub struct Exited {
    pub wall: Duration,
    pub cpu: Duration,
    /// The child's VmHWM, in KiB.
    pub peak_rss_kib: u64,
    pub stdout: String,
}

/// Runs `command` to its end, stderr to `log`; an unsuccessful exit is an error.
pub async fn run_to_exit(mut command: Command, log: &Path) -> anyhow::Result<Exited> {
    let log_file = std::fs::File::create(log).with_context(|| log.display().to_string())?;
    let log = log.to_owned();
    tokio::task::spawn_blocking(move || {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let started = Instant::now();
        let mut child = command.spawn().with_context(|| format!("{command:?}"))?;
        let mut pipe = child.stdout.take().expect("stdout is piped");
        let reader = std::thread::spawn(move || {
            let mut stdout = String::new();
            pipe.read_to_string(&mut stdout).map(|_| stdout)
        });
        // Peak RSS is the last VmHWM read before the exit: `ru_maxrss` would also
        // count the forked copy of this process before its exec.
        let pid = child.id() as libc::pid_t;
        let mut peak_rss_kib = 0;
        let mut status = 0;
        // SAFETY: a plain syscall on our own child; `usage` is written by the kernel.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            if let Some(hwm) = vm_hwm_kib(pid as u32) {
                peak_rss_kib = peak_rss_kib.max(hwm);
            }
            match unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) } {
                0 => std::thread::sleep(Duration::from_millis(2)),
                done if done == pid => break,
                _ => bail!("wait4: {}", std::io::Error::last_os_error()),
            }
        }
        let wall = started.elapsed();
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            bail!(
                "{command:?} failed (status {status:#x}); its log: {}",
                log.display()
            );
        }
        let timeval = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Ok(Exited {
            wall,
            cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
            peak_rss_kib,
            stdout: reader.join().expect("reader thread")?,
        })
    })
    .await?
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// A long-running child (a server), stopped with SIGINT.
pub struct Server {
    child: Child,
    pub started: Instant,
}

impl Server {
    pub fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log).with_context(|| log.display().to_string())?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let started = Instant::now();
        let child = command.spawn().with_context(|| format!("{command:?}"))?;
        Ok(Self { child, started })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmHWM` (peak resident set) and `VmRSS` from /proc, in KiB.
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("no {name} in /proc status"))?;
            Ok(line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()?)
        };
        Ok((field("VmHWM:")?, field("VmRSS:")?))
    }

    /// SIGINT (the graceful shutdown), then SIGKILL if it has not exited in 5 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                bail!("the server did not stop on SIGINT within 5 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
