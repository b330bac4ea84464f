//! `weave launch`: start the agent on this host.

use std::fs::OpenOptions;
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::api::{Reply, Request, client};
use crate::config::{LaunchOptions, Password, Paths};

/// How long the agent may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Start the weave agent on this host: the `weave` bridge and its eBPF
/// programs, the connections to peers (TCP 6783) and the data plane between
/// hosts (UDP 6784), the control socket the other commands talk to, and the
/// read-only HTTP endpoint (`--status-addr`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run in the foreground instead of as a background daemon.
    #[arg(long)]
    foreground: bool,
    #[command(flatten)]
    options: LaunchOptions,
}

pub(super) fn run(paths: &Paths, args: Args) -> anyhow::Result<()> {
    args.options.validate().map_err(anyhow::Error::msg)?;
    let password = args.options.password().map_err(anyhow::Error::msg)?;
    if client::is_running(&paths.socket) {
        bail!(
            "the agent is already running on {} (weave stop first to relaunch)",
            paths.socket.display()
        );
    }
    if args.foreground {
        init_logging();
        return crate::agent::run_foreground(paths.clone(), args.options);
    }
    daemonize(paths, password.as_ref())
}

/// The launch arguments without the password options: the password goes
/// to the agent in its environment (readable by root only), never on its
/// command line, which every user can read.
fn without_password(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match arg.as_str() {
            "--password" | "--password-file" => skip_value = true,
            a if a.starts_with("--password=") || a.starts_with("--password-file=") => {}
            _ => out.push(arg),
        }
    }
    out
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEAVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Re-executes this binary as `launch --foreground` in a new session, its
/// output going to the agent log, then waits until it answers.
fn daemonize(paths: &Paths, password: Option<&Password>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("creating {}", paths.state_dir.display()))?;
    let log_path = paths.log_file();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    // Same launch options as given; the paths travel in the environment so
    // they hold wherever the user put them on the command line.
    let launch_args = without_password(std::env::args().skip_while(|a| a != "launch").skip(1));
    let exe = std::env::current_exe().context("finding the weave binary")?;
    let mut command = Command::new(exe);
    command
        .arg("launch")
        .arg("--foreground")
        .args(launch_args)
        .env("WEAVE_SOCKET", &paths.socket)
        .env("WEAVE_STATE_DIR", &paths.state_dir)
        .env("DOCKER_HOST", &paths.docker_host)
        .env_remove("WEAVE_PASSWORD")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(password) = password {
        command.env("WEAVE_PASSWORD", password.as_str());
    }
    // SAFETY: setsid is async-signal-safe; it detaches the agent from the
    // caller's terminal and process group.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().context("starting the agent")?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Reply::Status(status)) = client::call(&paths.socket, &Request::Status) {
            println!("{}", status.mesh.name);
            return Ok(());
        }
        if let Some(exit) = child.try_wait()? {
            bail!("the agent exited ({exit}): {}", last_error(&log_path));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the agent did not answer within {READY_TIMEOUT:?}; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last line of the agent log, which says why it stopped.
fn last_error(log_path: &std::path::Path) -> String {
    std::fs::File::open(log_path)
        .ok()
        .and_then(|f| {
            BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter(|l| !l.trim().is_empty())
                .last()
        })
        .unwrap_or_else(|| format!("see {}", log_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_options_never_reach_the_agents_command_line() {
        let args = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            without_password(args(&[
                "--password",
                "s3cret",
                "10.0.0.2",
                "--password=x",
                "--password-file",
                "/etc/pw",
                "--password-file=/p",
                "--mtu",
                "1400",
            ])),
            args(&["10.0.0.2", "--mtu", "1400"])
        );
    }
}
