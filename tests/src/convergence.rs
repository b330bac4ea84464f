//! Launching agents and waiting for the mesh to settle: the steps every
//! multi-host test (and the soak) starts with.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::host::Host;
use crate::poll::wait_for;
#[cfg(not(feature = "agent-status"))]
use crate::report;

/// A full mesh of three must form within this (dial, handshake, gossip,
/// discovery, dial again).
pub const CONVERGE: Duration = Duration::from_mins(1);
/// The others must notice a dead peer within this (a silent control
/// connection is dead after 15 s).
pub const DEAD_PEER: Duration = Duration::from_secs(30);
/// A peer back on the LAN or relaunched must be reconnected within this
/// (reconnection backoff tops out at about 10 s, plus jitter).
pub const REJOIN: Duration = Duration::from_mins(1);

impl Host {
    /// `weave launch ARGS...`; returns the peer name it prints.
    #[track_caller]
    pub fn launch(&self, args: &[&str]) -> String {
        self.launch_env(args, &[])
    }

    /// `weave launch ARGS...` with extra environment variables (such as
    /// `WEAVE_PASSWORD`); returns the peer name it prints.
    #[track_caller]
    pub fn launch_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut all = vec!["launch"];
        all.extend_from_slice(args);
        let out = self.weave_env(&all, env).expect_ok();
        let name = out.trim();
        assert!(
            name.len() == 17 && name.split(':').count() == 6,
            "{}: weave launch prints the peer name (like a MAC), got {out:?}",
            self.nickname()
        );
        name.to_string()
    }

    /// This host's address on the LAN, as `weave launch`/`connect` take it.
    pub fn lan_addr(&self) -> String {
        self.lan_ip().to_string()
    }

    /// `weave run CIDR --name NAME IMAGE sleep 3600` (no CIDR when `cidr` is
    /// empty: an automatic address); returns the container id.
    #[track_caller]
    pub fn run_container(&self, cidr: &str, name: &str) -> String {
        let mut args = vec!["run"];
        if !cidr.is_empty() {
            args.push(cidr);
        }
        args.extend(["--name", name, crate::IMAGE, "sleep", "3600"]);
        let out = self.weave_ok(&args);
        let id = out.trim();
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "weave run prints the full container id, got {out:?}"
        );
        id.to_string()
    }

    /// Waits until this host knows `peers` peers, reports `peer_connections`
    /// established connections among all of them (each direction counts),
    /// and has established connections with exactly the hosts named in `with`.
    #[track_caller]
    pub fn wait_connected(
        &self,
        peers: usize,
        peer_connections: usize,
        with: &[&str],
        timeout: Duration,
    ) {
        let want: BTreeSet<String> = with.iter().map(ToString::to_string).collect();
        wait_for(
            &format!(
                "{} to know {peers} peers with {peer_connections} established connections, \
                 and to be connected to exactly {want:?}",
                self.nickname()
            ),
            timeout,
            || {
                let view = self.mesh_view()?;
                anyhow::ensure!(
                    view.peers == peers
                        && view.peer_connections == peer_connections
                        && view.established == want,
                    "connected to {:?}\n{}",
                    view.established,
                    view.shown
                );
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Waits until this host's established connections are exactly with the
    /// hosts named in `with` (peer counts are left alone: a peer nobody
    /// reaches is dropped from the topology, as in Weave).
    #[track_caller]
    pub fn wait_established(&self, with: &[&str], timeout: Duration) {
        let want: BTreeSet<String> = with.iter().map(ToString::to_string).collect();
        wait_for(
            &format!("{} to be connected to exactly {want:?}", self.nickname()),
            timeout,
            || {
                let view = self.mesh_view()?;
                anyhow::ensure!(
                    view.established == want,
                    "connected to {:?}\n{}",
                    view.established,
                    view.shown
                );
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// What the waits above look at.
struct MeshView {
    /// Known peers, this one included.
    peers: usize,
    /// Established connections all peers report (each direction counts).
    peer_connections: usize,
    /// Nicknames of the peers this host is connected to.
    established: BTreeSet<String>,
    /// The status, as `weave status` and `weave status connections` print it.
    shown: String,
}

impl Host {
    /// From `weave status --json` (the tests).
    #[cfg(feature = "agent-status")]
    fn mesh_view(&self) -> anyhow::Result<MeshView> {
        let status = self.try_status()?;
        Ok(MeshView {
            peers: status.mesh.peers.len(),
            peer_connections: crate::snapshot::peer_connections(&status.mesh),
            established: crate::snapshot::established_with(&status.mesh),
            shown: format!("{}{}", status.render(), status.mesh.render_connections()),
        })
    }

    /// From the text of `weave status`: xtask's soak builds the harness
    /// without weave-agent (see the `agent-status` feature).
    #[cfg(not(feature = "agent-status"))]
    fn mesh_view(&self) -> anyhow::Result<MeshView> {
        let status = self.try_weave(&["status"])?;
        let summary = report::Summary::parse(&status)?;
        let connections = self.try_weave(&["status", "connections"])?;
        let established = report::parse_connections(&connections)?
            .into_iter()
            .filter(report::Connection::is_established)
            .filter_map(|c| c.nickname)
            .collect();
        Ok(MeshView {
            peers: summary.peers,
            peer_connections: summary.peer_connections,
            established,
            shown: format!("{status}{connections}"),
        })
    }
}

impl Cluster {
    /// Waits until every host of the cluster is connected to every other.
    #[track_caller]
    pub fn wait_full_mesh(&self, timeout: Duration) {
        let names: Vec<&str> = self.hosts().iter().map(Host::nickname).collect();
        let n = names.len();
        for h in self.hosts() {
            let others: Vec<&str> = names
                .iter()
                .copied()
                .filter(|x| *x != h.nickname())
                .collect();
            h.wait_connected(n, n * (n - 1), &others, timeout);
        }
    }

    /// Weave's scenario on three hosts: h1 `launch`; h2 `launch` then
    /// `connect <h1>`; h3 `launch <h2>`; then waits for the full mesh.
    /// `args` go to every launch. Returns the peer names.
    #[track_caller]
    pub fn launch_scenario(&self, args: &[&str]) -> [String; 3] {
        let [h1, h2, h3] = self.hosts() else {
            panic!("the scenario needs exactly three hosts");
        };
        let n1 = h1.launch(args);
        let n2 = h2.launch(args);
        h2.weave_ok(&["connect", &h1.lan_addr()]);
        let mut with_peer = args.to_vec();
        let h2_addr = h2.lan_addr();
        with_peer.push(&h2_addr);
        let n3 = h3.launch(&with_peer);
        self.wait_full_mesh(CONVERGE);
        [n1, n2, n3]
    }
}
