//! Rebuilding the record of a container port the agent has no record of
//! (its state directory was lost or wiped while containers kept running):
//! the kernel still shows the container's interface and its addresses, and
//! Weave re-claimed exactly those. Dropping the port instead would take a
//! running container's addresses away without a word. A port whose
//! container side holds no address is what an attach interrupted by the
//! agent's death leaves; it is removed.

use std::time::Duration;

use crate::config::{CONTAINER_IFNAME, CONTAINER_PORT_PREFIX};
use crate::docker::Docker;
use crate::mac::Mac;
use crate::netlink::{NetnsRef, guest_link};
use crate::state::EndpointRecord;

use super::Agent;

/// How long Docker may take to name a container found this way; without
/// an answer the record keeps the container's ID alone.
const DOCKER_ASK: Duration = Duration::from_secs(5);

impl Agent {
    /// The record of the unknown port `host_ifname` (index `index`), when
    /// it is a Docker container's: its name ends with the container's PID
    /// (`vethwepl<pid>`), that process's namespace holds `ethwe` paired with
    /// this very port, and its cgroup names the container. `Err` says why
    /// not, for the log.
    pub(super) async fn adopt(
        &self,
        host_ifname: &str,
        index: u32,
    ) -> Result<EndpointRecord, String> {
        let pid: u32 = host_ifname
            .strip_prefix(CONTAINER_PORT_PREFIX)
            .and_then(|suffix| suffix.parse().ok())
            .ok_or("its name does not end with a container's PID")?;
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|e| format!("process {pid}: {e}"))?;
        let container_id = docker_id_in_cgroup(&cgroup)
            .ok_or_else(|| format!("process {pid} is not in a Docker container's cgroup"))?;
        let netns = NetnsRef::Pid(pid);
        let link = guest_link(&netns, CONTAINER_IFNAME)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{netns} has no {CONTAINER_IFNAME}"))?;
        if link.peer_index != Some(index) {
            return Err(format!(
                "{CONTAINER_IFNAME} in {netns} is not paired with this port"
            ));
        }
        // `weave detach` takes the port away with the last address, so a
        // port without one is an attach the agent died in: its `weave run`
        // failed, and keeping the port would list a container with no address.
        if link.cidrs.is_empty() {
            return Err(format!(
                "{CONTAINER_IFNAME} in {netns} has no address (an attach that did not finish)"
            ));
        }
        let (name, hostname) = self.docker_names(&container_id).await;
        Ok(EndpointRecord {
            container_id,
            container_name: name,
            pid,
            host_ifname: host_ifname.to_owned(),
            mac: Mac(link.mac),
            cidrs: link.cidrs,
            cni: None,
            docker_network: None,
            hostname,
        })
    }

    /// The container's name and host name, as Docker tells them; empty
    /// (the record then shows the short ID) when Docker does not answer.
    async fn docker_names(&self, id: &str) -> (String, Option<String>) {
        let ask = async {
            let info = Docker::connect(&self.paths.docker_host)
                .await?
                .inspect(id)
                .await?;
            anyhow::Ok(info)
        };
        match tokio::time::timeout(DOCKER_ASK, ask).await {
            Ok(Ok(info)) => (info.name, Some(info.hostname).filter(|h| !h.is_empty())),
            Ok(Err(e)) => {
                tracing::warn!(container = id, error = %e, "asking Docker for a container's name");
                (String::new(), None)
            }
            Err(_) => {
                tracing::warn!(
                    container = id,
                    "Docker did not tell a container's name in time"
                );
                (String::new(), None)
            }
        }
    }
}

/// The Docker container ID in a process's `/proc/PID/cgroup`: the last
/// path component of a line, as the cgroupfs driver (`/docker/<id>`, or
/// under a `--cgroup-parent`) and the systemd driver
/// (`/system.slice/docker-<id>.scope`) name it.
fn docker_id_in_cgroup(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.rsplit(':').next()?;
        let last = path.rsplit('/').next()?;
        let id = last
            .strip_prefix("docker-")
            .and_then(|s| s.strip_suffix(".scope"))
            .unwrap_or(last);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e8a7c0b1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f";

    #[test]
    fn a_docker_container_is_named_by_its_cgroup_with_either_driver() {
        let cgroupfs = format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n0::/\n");
        assert_eq!(docker_id_in_cgroup(&cgroupfs).as_deref(), Some(ID));
        let systemd = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(docker_id_in_cgroup(&systemd).as_deref(), Some(ID));
    }

    #[test]
    fn a_process_outside_docker_names_no_container_and_a_cgroup_parent_is_allowed() {
        assert_eq!(
            docker_id_in_cgroup("0::/user.slice/session-1.scope\n"),
            None
        );
        let parent = format!("0::/my-parent/{ID}\n");
        assert_eq!(docker_id_in_cgroup(&parent).as_deref(), Some(ID));
        assert_eq!(docker_id_in_cgroup("12:pids:/docker/abc\n"), None);
    }
}
