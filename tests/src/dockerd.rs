//! A dockerd per simulated host, inside the host's network namespace.

use std::fs::{self, File};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};

use crate::cleanup::{kill, remove_tree};
use crate::command::{Output, describe, run, wait_child};
use crate::netns::Netns;
use crate::poll::wait_until;
use crate::prereq::{docker_cli, require_program};
use crate::{CMD_TIMEOUT, DOCKERD_START_TIMEOUT};

/// Where dockerd looks for legacy plugins' sockets (fixed in dockerd 20.10).
const PLUGINS: &str = "/run/docker/plugins";

/// A dockerd running inside a network namespace (and a mount namespace of
/// its own, for its plugins directory), with everything it owns
/// (socket, data root, exec root, pidfile, log) under one directory.
/// Drop removes its containers, stops it and removes its mounts and files.
#[derive(Debug)]
pub struct Dockerd {
    child: Option<Child>,
    dir: PathBuf,
    docker: PathBuf,
}

impl Dockerd {
    /// Starts dockerd in `netns` with its files under `dir` (created, must not
    /// exist), and waits until it answers.
    pub fn start(netns: &Netns, dir: &Path) -> Result<Self> {
        let docker = docker_cli()?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join("daemon.json"), "{}\n")?;
        let mut daemon = Self {
            child: None,
            dir: dir.to_path_buf(),
            docker,
        };
        daemon.spawn(netns)?;
        Ok(daemon)
    }

    /// Stops dockerd as its service would be stopped (SIGTERM: it stops its
    /// containers) and starts it again on the same files; waits until it
    /// answers. A fault the agent must survive.
    pub fn restart(&mut self, netns: &Netns) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            kill(&[child.id()], "TERM");
            wait_child(&mut child, Duration::from_mins(1), "dockerd shutdown")?;
        }
        self.spawn(netns)
    }

    /// Runs dockerd on this daemon's files and waits until it answers.
    fn spawn(&mut self, netns: &Netns) -> Result<()> {
        let dockerd_bin = require_program("dockerd", "docker.io")?;
        let dir = &self.dir;
        let log_path = dir.join("dockerd.log");
        let log = File::options().create(true).append(true).open(&log_path)?;
        // Docker finds legacy plugins only in /run/docker/plugins: dockerd
        // gets a mount namespace of its own in which that directory is this
        // daemon's `plugins` directory, so a simulated host's weave plugin
        // is found by its dockerd alone and the machine's is never touched.
        // And a UTS namespace with the namespace's name as hostname: Swarm
        // names its nodes by hostname. Both go when dockerd and its
        // children (containerd, shims, plugins) are gone.
        let plugins = self.plugins_dir();
        fs::create_dir_all(&plugins)?;
        let mut c = netns.command("unshare");
        c.args(["--mount", "--uts", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "hostname \"$1\" && mkdir -p {PLUGINS} && mount --bind \"$0\" {PLUGINS} && shift && exec \"$@\""
            ))
            .arg(&plugins)
            .arg(netns.name())
            .arg(&dockerd_bin)
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-masq=false",
            ])
            // A containerd namespace of its own, in case a system containerd is shared.
            .arg("--containerd-namespace")
            .arg(netns.name())
            .arg("--containerd-plugins-namespace")
            .arg(format!("{}-plugins", netns.name()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C on the terminal must not stop it
            // before the guards have removed its containers.
            .process_group(0);
        let child = c
            .spawn()
            .with_context(|| format!("cannot start {}", describe(&c)))?;
        self.child = Some(child);
        let started = wait_until("dockerd to answer", DOCKERD_START_TIMEOUT, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Some(Err(anyhow!("dockerd exited at start ({status})")));
            }
            let version = self.docker(&["version", "--format", "{{.Server.Version}}"]);
            version.success().then_some(Ok(()))
        });
        started.and_then(|r| r).map_err(|e| {
            e.context(format!(
                "dockerd log {}:\n{}",
                log_path.display(),
                self.log_tail(30)
            ))
        })
    }

    /// The directory this daemon sees as `/run/docker/plugins`.
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// `unix://<dir>/docker.sock`, the value for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// A docker CLI command against this daemon (`docker -H <socket>`).
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.docker);
        c.arg("-H").arg(self.host());
        c
    }

    /// Runs the docker CLI against this daemon; an error if it cannot run at all.
    pub fn try_docker(&self, args: &[&str]) -> Result<Output> {
        let mut c = self.command();
        c.args(args);
        run(&mut c, CMD_TIMEOUT)
    }

    /// Runs the docker CLI against this daemon (panics if it cannot run at all).
    pub fn docker(&self, args: &[&str]) -> Output {
        self.try_docker(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Full ids of all containers, running or not.
    pub fn containers(&self) -> Result<Vec<String>> {
        let out = self.try_docker(&["ps", "-aq", "--no-trunc"])?.ok()?;
        let mut ids: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        ids.sort();
        Ok(ids)
    }

    /// Leaves any swarm, removes its containers and plugins, stops it
    /// (SIGTERM, then SIGKILL), removes its files.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Out of the swarm first, or its tasks would be started again.
        // Refused quietly when the daemon is in none.
        let _ = self.try_docker(&["swarm", "leave", "--force"]);
        if let Ok(ids) = self.containers()
            && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.try_docker(&args);
        }
        // Managed plugins run as containers of their own.
        if let Ok(out) = self.try_docker(&["plugin", "ls", "-q"])
            && let Ok(ids) = out.ok()
        {
            for id in ids.split_whitespace() {
                let _ = self.try_docker(&["plugin", "rm", "-f", id]);
            }
        }
        kill(&[child.id()], "TERM");
        if wait_child(&mut child, Duration::from_secs(30), "dockerd shutdown").is_err() {
            eprintln!("weave-tests: dockerd did not stop on SIGTERM; killed it");
        }
        // Its containerd and shims, and any container left running.
        remove_tree(&self.dir);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::netns_path;
    use crate::cleanup::{alive, host_dir, mounts_under, processes_under, purge};
    use crate::image::import_busybox;
    use crate::netns::parse_links;
    use crate::{IMAGE, TEST_PREFIX, require_root};

    fn unique(tag: &str) -> String {
        format!("{TEST_PREFIX}{}-{tag}-h1", std::process::id())
    }

    #[test]
    fn dockerd_in_netns_runs_a_busybox_container_without_network() {
        require_root("the dockerd self-test");
        let name = unique("dockerd");
        purge(&name);
        let dir = host_dir(&name);
        let ns = Netns::create(&name).unwrap();
        let dockerd = Dockerd::start(&ns, &dir.join("docker")).unwrap();
        let daemon_pid = fs::read_to_string(dir.join("docker/docker.pid"))
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap();
        assert!(
            ns.pids().contains(&daemon_pid),
            "dockerd must run inside {name}"
        );
        import_busybox(&dockerd, &dir).unwrap();

        let id = dockerd
            .docker(&["run", "-d", "--net=none", IMAGE, "sleep", "3600"])
            .expect_ok();
        let id = id.trim();
        assert_eq!(id.len(), 64, "{id:?}");
        let links = dockerd
            .docker(&["exec", id, "ip", "-o", "link", "show"])
            .expect_ok();
        let names: Vec<String> = parse_links(&links).into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["lo"], "a --net=none container has only lo");
        let ping = dockerd.docker(&["exec", id, "ping", "-c", "1", "-W", "1", "127.0.0.1"]);
        assert!(ping.success(), "{ping}");
        let pid = dockerd
            .docker(&["inspect", "-f", "{{.State.Pid}}", id])
            .expect_ok();
        let pid: u32 = pid.trim().parse().unwrap();
        let container_ns = fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        let host_ns = fs::read_link(format!("/proc/{daemon_pid}/ns/net")).unwrap();
        assert_ne!(
            container_ns, host_ns,
            "the container has its own network namespace"
        );
        assert_eq!(dockerd.containers().unwrap(), [id.to_string()]);

        drop(dockerd);
        assert!(!alive(pid), "container process {pid} must be gone");
        assert!(!alive(daemon_pid), "dockerd {daemon_pid} must be gone");
        assert!(
            processes_under(&dir).is_empty(),
            "nothing may run from {}",
            dir.display()
        );
        assert!(
            mounts_under(&dir).is_empty(),
            "nothing may stay mounted under {}",
            dir.display()
        );
        drop(ns);
        remove_tree(&dir);
        assert!(!dir.exists() && !netns_path(&name).exists());
    }
}
