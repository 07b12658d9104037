//! The two servers under test as child processes: start them on loopback port 0, learn their
//! ports from their stdout line, and kill them when the run ends (also on error).

use anyhow::Context as _;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{warden_config, Pipeline, EVENT_STORE_OFF};
use crate::workload::{UPSTREAM_KEY, VIRTUAL_KEY};

/// How long a server may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(20);
/// The identity stage's HMAC secret (any 32+ characters; the benchmark's own).
const SAFETY_SECRET: &str = "bench-safety-identifier-secret-0123456789";

/// A scratch directory for the config, the SQLite file and the servers' output; removed on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn create() -> anyhow::Result<Scratch> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("warden-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running server; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Server {
    pub name: &'static str,
    child: Child,
    stderr_path: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the server wrote to stderr (warnings and errors at `level = "warn"`).
    pub fn stderr_tail(&self, lines: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        all[all.len().saturating_sub(lines)..]
            .iter()
            .map(|l| (*l).to_owned())
            .collect()
    }

    /// Lines on stderr so far.
    pub fn stderr_lines(&self) -> usize {
        std::fs::read_to_string(&self.stderr_path)
            .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
            .unwrap_or(0)
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stand-in upstream, requiring the benchmark's upstream key.
pub fn start_standin(bin_dir: &Path, scratch: &Scratch) -> anyhow::Result<(Server, SocketAddr)> {
    let mut command = Command::new(binary(bin_dir, "standin")?);
    command.args(["--listen", "127.0.0.1:0", "--api-key", UPSTREAM_KEY]);
    let mut server = spawn("standin", command, scratch)?;
    let line = wait_for_line(&mut server, scratch, "standin listening on ")?;
    let addr = parse_standin_line(&line)?;
    Ok((server, addr))
}

/// Warden in front of the stand-in, with the stages `pipeline` names.
pub fn start_warden(
    bin_dir: &Path,
    scratch: &Scratch,
    standin: SocketAddr,
    pipeline: Pipeline,
    event_store: bool,
    cpu: Option<usize>,
) -> anyhow::Result<(Server, SocketAddr)> {
    let db = scratch.path().join("warden.db");
    let mut config = warden_config(pipeline, standin, &db);
    if !event_store {
        config.push_str(EVENT_STORE_OFF);
    }
    start_warden_pinned(bin_dir, scratch, "warden", &config, cpu)
}

/// A Warden named `name` (its config, output and, by convention, its database file carry the
/// name, so several can share one scratch directory) running the config text `config`.
pub fn start_warden_with(
    bin_dir: &Path,
    scratch: &Scratch,
    name: &'static str,
    config: &str,
) -> anyhow::Result<(Server, SocketAddr)> {
    start_warden_pinned(bin_dir, scratch, name, config, None)
}

/// Like `start_warden_with`, on CPU `cpu` alone when given (`taskset -c`, which execs
/// Warden in place, so the pid read for CPU time and RSS stays Warden's).
fn start_warden_pinned(
    bin_dir: &Path,
    scratch: &Scratch,
    name: &'static str,
    config: &str,
    cpu: Option<usize>,
) -> anyhow::Result<(Server, SocketAddr)> {
    let config_path = scratch.path().join(format!("{name}.toml"));
    std::fs::write(&config_path, config).context("writing the Warden config")?;
    let warden = binary(bin_dir, "warden")?;
    let mut command = match cpu {
        Some(cpu) => {
            let mut taskset = Command::new("taskset");
            taskset.arg("-c").arg(cpu.to_string()).arg(warden);
            taskset
        }
        None => Command::new(warden),
    };
    command
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env("BENCH_UPSTREAM_KEY", UPSTREAM_KEY)
        .env("BENCH_SAFETY_SECRET", SAFETY_SECRET)
        .env("BENCH_KEY", VIRTUAL_KEY)
        .env_remove("RUST_LOG");
    let mut server = spawn(name, command, scratch)?;
    let line = wait_for_line(&mut server, scratch, "warden listening on ")?;
    let addr = parse_warden_line(&line)?;
    Ok((server, addr))
}

/// Fails early, before anything is started, if either server binary is missing.
pub fn check_binaries(bin_dir: &Path) -> anyhow::Result<()> {
    binary(bin_dir, "standin")?;
    binary(bin_dir, "warden")?;
    Ok(())
}

fn binary(bin_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found; build it first: cargo build --release -p warden -p standin (or pass --bin-dir)",
        path.display()
    );
    Ok(path)
}

fn spawn(name: &'static str, mut command: Command, scratch: &Scratch) -> anyhow::Result<Server> {
    let stdout = File::create(scratch.path().join(format!("{name}.out")))?;
    let stderr_path = scratch.path().join(format!("{name}.err"));
    let stderr = File::create(&stderr_path)?;
    let child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Server {
        name,
        child,
        stderr_path,
    })
}

/// Waits until the server's stdout holds a line starting with `prefix`.
fn wait_for_line(server: &mut Server, scratch: &Scratch, prefix: &str) -> anyhow::Result<String> {
    let stdout = scratch.path().join(format!("{}.out", server.name));
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&stdout).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with(prefix)) {
            return Ok(line.to_owned());
        }
        if let Some(status) = server.exited() {
            anyhow::bail!(
                "{} exited ({status}) before listening; stderr:\n{}",
                server.name,
                server.stderr_tail(20).join("\n")
            );
        }
        anyhow::ensure!(
            started.elapsed() < STARTUP_TIMEOUT,
            "{} printed no '{prefix}…' line within {STARTUP_TIMEOUT:?}",
            server.name
        );
        std::thread::sleep(POLL_EVERY);
    }
}

/// `standin listening on http://127.0.0.1:PORT`
fn parse_standin_line(line: &str) -> anyhow::Result<SocketAddr> {
    let rest = line
        .strip_prefix("standin listening on http://")
        .with_context(|| format!("unexpected stand-in line: {line}"))?;
    loopback(rest.trim())
}

/// `warden listening on http://127.0.0.1:PORT (admin http://127.0.0.1:PORT2)`
fn parse_warden_line(line: &str) -> anyhow::Result<SocketAddr> {
    let rest = line
        .strip_prefix("warden listening on http://")
        .with_context(|| format!("unexpected Warden line: {line}"))?;
    let addr = rest.split_whitespace().next().unwrap_or_default();
    loopback(addr)
}

/// The benchmark only ever talks to loopback.
fn loopback(text: &str) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = text
        .parse()
        .with_context(|| format!("not an address: {text}"))?;
    anyhow::ensure!(addr.ip().is_loopback(), "{addr} is not a loopback address");
    Ok(addr)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn listening_lines_give_the_public_port() {
        let standin = parse_standin_line("standin listening on http://127.0.0.1:4100").unwrap();
        assert_eq!(standin.port(), 4100);
        let warden = parse_warden_line(
            "warden listening on http://127.0.0.1:4200 (admin http://127.0.0.1:4201)",
        )
        .unwrap();
        assert_eq!(warden.port(), 4200);
    }

    #[test]
    fn anything_but_loopback_is_refused() {
        assert!(parse_standin_line("standin listening on http://10.0.0.1:80").is_err());
        assert!(parse_warden_line("warden listening on http://0.0.0.0:80 (admin x)").is_err());
    }
}
