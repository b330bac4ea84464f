//! Cleanup primitives shared by the guards' `Drop` and by the sweep of what
//! dead test runs left behind (SIGKILL, Ctrl-C of `cargo test`).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::command::{cmd, run};
use crate::poll::wait_until;
use crate::{NETNS_DIR, TEST_PREFIX};

/// Ids of the containers a dockerd with its files under `dir` knows of
/// (`<data root>/containers/<id>`; the data root is `dir/data` for a
/// [`Dockerd`], `dir/docker/data` for a [`Host`]).
pub(crate) fn container_ids_under(dir: &Path) -> Vec<String> {
    ["data/containers", "docker/data/containers"]
        .iter()
        .filter_map(|sub| fs::read_dir(dir.join(sub)).ok())
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

/// Pids of processes that belong to what lives under `dir`: those whose
/// command line mentions it (dockerd, its containerd and shims) and those in
/// the cgroup of one of its containers (left running when dockerd died).
pub(crate) fn processes_under(dir: &Path) -> Vec<u32> {
    let dir_s = dir.to_string_lossy().into_owned();
    let inside = format!("{dir_s}/");
    let ids = container_ids_under(dir);
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mentions = cmdline.split(|&b| b == 0).any(|arg| {
                let arg = String::from_utf8_lossy(arg);
                arg.contains(&inside) || arg.ends_with(&dir_s)
            });
            let contained = !ids.is_empty()
                && fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|cg| ids.iter().any(|id| cg.contains(id.as_str())));
            mentions || contained
        })
        .collect()
}

pub(crate) fn kill(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let mut c = Command::new("kill");
    c.arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string));
    run(&mut c, Duration::from_secs(10)).ok();
}

/// Whether process `pid` exists (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; it holds nothing, so it counts as gone.
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// SIGKILLs `pids` and waits (bounded) until they are gone.
pub(crate) fn kill_and_reap(pids: &[u32]) {
    kill(pids, "KILL");
    let _ = wait_until("killed processes to exit", Duration::from_secs(10), || {
        pids.iter().all(|&p| !alive(p)).then_some(())
    });
}

pub(crate) fn unescape_mountinfo(field: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("0");
            out.push(u8::from_str_radix(oct, 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or under `dir` in this mount namespace, deepest first.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    mounts.dedup();
    mounts
}

/// Unmounts everything at or under `dir` (lazily when busy).
pub(crate) fn unmount_under(dir: &Path) {
    for _round in 0..3 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let plain = run(&mut cmd("umount", [&m]), Duration::from_secs(20));
            if !plain.is_ok_and(|o| o.success()) {
                run(
                    &mut cmd("umount", [OsStr::new("-l"), m.as_os_str()]),
                    Duration::from_secs(20),
                )
                .ok();
            }
        }
    }
}

/// Kills what runs from `dir`, unmounts what is mounted under it, removes it.
pub(crate) fn remove_tree(dir: &Path) {
    kill_and_reap(&processes_under(dir));
    unmount_under(dir);
    if dir.exists()
        && let Err(e) = fs::remove_dir_all(dir)
    {
        eprintln!("weave-tests: cannot remove {}: {e}", dir.display());
    }
}

pub(crate) fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Pids of processes in network namespace `name` (`ip netns pids`).
pub(crate) fn netns_pids(name: &str) -> Vec<u32> {
    run(
        &mut cmd("ip", ["netns", "pids", name]),
        Duration::from_secs(10),
    )
    .map(|o| {
        o.stdout
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

/// Removes everything a host called `name` may have left: its processes, mounts,
/// temporary directory and network namespace. Safe to call when nothing is left.
pub fn purge(name: &str) {
    let dir = host_dir(name);
    remove_tree(&dir);
    if netns_path(name).exists() {
        kill_and_reap(&netns_pids(name));
        remove_bpf_pins(&netns_path(name));
        let _ = run(
            &mut cmd("ip", ["netns", "del", name]),
            Duration::from_secs(20),
        );
    }
}

/// The directory under bpffs where a weave agent in the namespace at
/// `netns` pins its links (`/sys/fs/bpf/weave/net<inode>`).
pub(crate) fn bpf_pin_dir(netns: &Path) -> PathBuf {
    let inode = fs::metadata(netns).map_or(0, |m| std::os::unix::fs::MetadataExt::ino(&m));
    PathBuf::from(format!("/sys/fs/bpf/weave/net{inode}"))
}

/// Removes what an agent killed in the namespace at `netns` left pinned
/// (`weave reset` does it too; this is for runs that never got there).
pub(crate) fn remove_bpf_pins(netns: &Path) {
    let _ = fs::remove_dir_all(bpf_pin_dir(netns));
}

/// Purges `wvt<pid>-...` namespaces and directories whose process `<pid>` is gone.
pub fn sweep_stale() {
    let is_stale = |name: &str| {
        let Some(rest) = name.strip_prefix(TEST_PREFIX) else {
            return false;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            return false;
        };
        pid.parse::<u32>()
            .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    let mut names = BTreeSet::new();
    for dir in [Path::new(NETNS_DIR).to_path_buf(), std::env::temp_dir()] {
        if let Ok(entries) = fs::read_dir(&dir) {
            names.extend(
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| is_stale(n)),
            );
        }
    }
    for name in names {
        eprintln!("weave-tests: removing leftovers of a dead test run: {name}");
        purge(&name);
    }
}

/// The per-host temporary directory of host `name`.
pub fn host_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerd::Dockerd;
    use crate::image::import_busybox;
    use crate::netns::Netns;
    use crate::{IMAGE, require_root};

    fn unique(tag: &str) -> String {
        format!("{TEST_PREFIX}{}-{tag}-h1", std::process::id())
    }

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn purge_removes_what_a_killed_dockerd_left_running() {
        require_root("the purge self-test");
        let name = unique("killed");
        purge(&name);
        let dir = host_dir(&name);
        let ns = Netns::create(&name).unwrap();
        let dockerd = Dockerd::start(&ns, &dir.join("docker")).unwrap();
        import_busybox(&dockerd, &dir).unwrap();
        let id = dockerd
            .docker(&["run", "-d", "--net=none", IMAGE, "sleep", "3600"])
            .expect_ok();
        let pid: u32 = dockerd
            .docker(&["inspect", "-f", "{{.State.Pid}}", id.trim()])
            .expect_ok()
            .trim()
            .parse()
            .unwrap();
        // A crash: dockerd, containerd and the shim die; the container goes on.
        let runtime: Vec<u32> = processes_under(&dir)
            .into_iter()
            .filter(|&p| p != pid)
            .collect();
        assert!(
            runtime.len() >= 3,
            "dockerd, containerd and a shim: {runtime:?}"
        );
        kill_and_reap(&runtime);
        std::mem::forget(dockerd);
        std::mem::forget(ns);
        assert!(alive(pid), "the container outlives its runtime");
        assert!(
            processes_under(&dir).contains(&pid),
            "and is found through its cgroup"
        );

        purge(&name);
        assert!(!alive(pid), "purge ends the orphaned container");
        assert!(mounts_under(&dir).is_empty() && !dir.exists() && !netns_path(&name).exists());
    }

    #[test]
    fn stale_leftovers_of_dead_runs_are_swept() {
        require_root("the sweep self-test");
        // pid 0 never names a live test process.
        let name = format!("{TEST_PREFIX}0-sweep-h1");
        purge(&name);
        let ns = Netns::create(&name).unwrap();
        std::mem::forget(ns);
        fs::create_dir_all(host_dir(&name).join("x")).unwrap();
        sweep_stale();
        assert!(!netns_path(&name).exists());
        assert!(!host_dir(&name).exists());
    }
}
