//! Several simulated hosts on one simulated LAN, created and torn down side
//! by side (dockerd start-up and teardown are mostly waiting).

use std::ops::{Index, IndexMut};
use std::path::PathBuf;

use anyhow::{Result, anyhow, ensure};

use crate::TEST_PREFIX;
use crate::cleanup::sweep_stale;
use crate::host::Host;
use crate::lan::Lan;
use crate::prereq::{is_root, require_root, weave_bin};

/// The LAN's subnet: host `i` (from 1) is `192.168.250.<i>/24`.
pub const LAN_NET: &str = "192.168.250";
pub const LAN_PREFIX_LEN: u8 = 24;

/// `n` hosts named `<prefix>-h1`, `<prefix>-h2`, ... on LAN `<prefix>-lan`,
/// host `i` at `192.168.250.<i>/24` on its `eth0`.
///
/// Drop tears the hosts down in parallel (printing their logs first when a
/// test panics), then the LAN.
#[derive(Debug)]
pub struct Cluster {
    hosts: Vec<Host>,
    lan: Option<Lan>,
}

impl Cluster {
    /// A cluster of `n` hosts for test `test` (a short tag), prefix
    /// `wvt<pid>-<test>`. Panics loudly when a prerequisite is missing.
    #[track_caller]
    pub fn new(test: &str, n: usize) -> Self {
        Self::with_docker_on(test, n, |_| true)
    }

    /// [`Cluster::new`] where only the hosts `docker(i)` picks (host `i`
    /// counting from 1) get a dockerd.
    #[track_caller]
    pub fn with_docker_on(test: &str, n: usize, docker: impl Fn(usize) -> bool + Sync) -> Self {
        require_root("this integration test");
        let weave_bin = weave_bin().unwrap_or_else(|e| panic!("\n\n*** {e:#}\n\n"));
        let prefix = format!("{TEST_PREFIX}{}-{test}", std::process::id());
        Self::create_with(&prefix, n, weave_bin, docker, |host, step| {
            eprintln!("[{prefix}-{host}] {step}")
        })
        .unwrap_or_else(|e| panic!("\n\n*** cannot set up simulated hosts {prefix}-*: {e:#}\n\n"))
    }

    /// Creates the LAN and `n` hosts (each with its dockerd and image, in
    /// parallel) and plugs them in; `say(host nickname, step)` reports.
    pub fn create(
        prefix: &str,
        n: usize,
        weave_bin: PathBuf,
        say: impl Fn(&str, &str) + Sync,
    ) -> Result<Self> {
        Self::create_with(prefix, n, weave_bin, |_| true, say)
    }

    /// [`Cluster::create`] where only the hosts `docker(i)` picks (host `i`
    /// counting from 1) get a dockerd: runs of many agents.
    pub fn create_with(
        prefix: &str,
        n: usize,
        weave_bin: PathBuf,
        docker: impl Fn(usize) -> bool + Sync,
        say: impl Fn(&str, &str) + Sync,
    ) -> Result<Self> {
        ensure!(is_root(), "creating simulated hosts needs root");
        ensure!((1..=250).contains(&n), "1 to 250 hosts, not {n}");
        sweep_stale();
        say(
            "lan",
            &format!("create the LAN: namespace {prefix}-lan, bridge in it"),
        );
        let lan = Lan::create(&format!("{prefix}-lan"))?;
        let built: Vec<Result<Host>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (1..=n)
                .map(|i| {
                    let (bin, say, docker) = (weave_bin.clone(), &say, docker(i));
                    scope.spawn(move || {
                        let nick = format!("h{i}");
                        Host::build_with(&format!("{prefix}-{nick}"), bin, docker, |step| {
                            say(&nick, step)
                        })
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(anyhow!("creating a host panicked")))
                })
                .collect()
        });
        let mut cluster = Self {
            hosts: Vec::with_capacity(n),
            lan: Some(lan),
        };
        let mut first_error = None;
        for host in built {
            match host {
                Ok(h) => cluster.hosts.push(h),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for (i, host) in cluster.hosts.iter_mut().enumerate() {
            let cidr = format!("{LAN_NET}.{}/{LAN_PREFIX_LEN}", i + 1);
            say(host.nickname(), &format!("plug eth0 ({cidr}) into the LAN"));
            host.join_lan(cluster.lan.as_ref().expect("LAN until dropped"), &cidr)?;
        }
        Ok(cluster)
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub const fn lan(&self) -> &Lan {
        self.lan
            .as_ref()
            .expect("a cluster has a LAN until dropped")
    }

    /// Cuts `host` off the LAN (its bridge port goes down).
    #[track_caller]
    pub fn cut(&self, host: &Host) {
        self.lan()
            .cut(host.lan_port())
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Plugs `host` back in and waits for its carrier.
    #[track_caller]
    pub fn reconnect(&self, host: &Host) {
        self.lan()
            .reconnect(host.lan_port())
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Blocks IPv4 between `a` and `b` on the LAN, both ways.
    #[track_caller]
    pub fn block(&self, a: &Host, b: &Host) {
        self.lan()
            .block(a.lan_port(), b.lan_port())
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    #[track_caller]
    pub fn unblock(&self, a: &Host, b: &Host) {
        self.lan()
            .unblock(a.lan_port(), b.lan_port())
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Packets the block between `a` and `b` dropped so far.
    #[track_caller]
    pub fn blocked_packets(&self, a: &Host, b: &Host) -> u64 {
        self.lan()
            .blocked_packets(a.lan_port(), b.lan_port())
            .unwrap_or_else(|e| panic!("{e:#}"))
    }
}

impl Index<usize> for Cluster {
    type Output = Host;

    /// Host `i`, counting from 0 (`cluster[0]` is `h1`).
    fn index(&self, index: usize) -> &Host {
        &self.hosts[index]
    }
}

impl IndexMut<usize> for Cluster {
    fn index_mut(&mut self, index: usize) -> &mut Host {
        &mut self.hosts[index]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for host in &self.hosts {
                host.print_diagnostics();
            }
        }
        // Each host's teardown (weave reset, docker rm, dockerd stop) waits
        // mostly; in parallel it takes as long as the slowest.
        std::thread::scope(|scope| {
            for host in self.hosts.drain(..) {
                scope.spawn(move || drop(host));
            }
        });
        drop(self.lan.take());
    }
}
