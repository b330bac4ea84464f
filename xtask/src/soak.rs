//! `cargo xtask soak`: three simulated hosts under container churn and
//! steady traffic for a bounded time, watching the agents' memory.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use weave_tests::convergence::REJOIN;
use weave_tests::{Cluster, Host};

use crate::build;
use crate::util::{self, header};

/// Prefix of the soak's namespaces and directories: `wvsoak-lan`, `wvsoak-h1`...
const PREFIX: &str = "wvsoak";
/// Churned containers kept alive per host; the oldest goes when one comes.
const POOL: usize = 4;
/// Growth of an agent's resident memory after warm-up that still counts as
/// flat: allocator noise, not a leak.
const RSS_SLACK_KIB: u64 = 4 * 1024;

/// Soak three simulated hosts: container churn and steady traffic, agent memory at start and end.
///
/// Builds three hosts (namespaces wvsoak-h1..h3 on wvsoak-lan, each with its dockerd), forms
/// the mesh, starts a steady container per host pinging the next host's (1000-byte pings every
/// 20 ms), then, until the time is up, round-robin over the hosts: `weave run` a container with
/// an automatic address, check that no address is in use twice anywhere and that the new
/// container reaches the other hosts' steady containers, and remove the host's oldest churned
/// container. Every agent's resident memory is sampled along the way; the run fails if it grows
/// by more than 4 MiB after the warm-up. Not part of `cargo xtask test`. Everything is removed
/// at the end, also on failure or Ctrl-C. Needs root.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// How long to soak, in minutes.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// The first part of the run, in minutes, after which memory must stay flat.
    #[arg(long, default_value_t = 2)]
    warmup_minutes: u64,
    /// Build and run the release profile.
    #[arg(long)]
    release: bool,
}

pub(crate) fn run(args: Args) -> Result<()> {
    if !weave_tests::is_root() {
        bail!(
            "cargo xtask soak must run as root: it creates network namespaces, starts dockerd and loads BPF programs"
        );
    }
    ensure!(args.minutes > 0, "--minutes must be at least 1");
    ensure!(
        args.warmup_minutes < args.minutes,
        "--warmup-minutes must be shorter than --minutes"
    );
    let weave = build::run(build::Args {
        release: args.release,
    })?;
    util::catch_interrupts();
    let result = soak(
        &weave,
        Duration::from_secs(args.minutes * 60),
        Duration::from_secs(args.warmup_minutes * 60),
    );
    if weave_tests::interrupted() {
        header("soak: interrupted; everything it created has been removed");
        std::process::exit(130);
    }
    let report = result?;
    header("soak: passed; everything it created has been removed");
    println!("{report}");
    Ok(())
}

/// Resident memory samples of one agent, in KiB.
#[derive(Default)]
struct Memory {
    start: u64,
    after_warmup: Option<u64>,
    max_after_warmup: u64,
    end: u64,
}

fn soak(weave_bin: &Path, length: Duration, warmup: Duration) -> Result<String> {
    header(&format!(
        "soak: {} min ({} min warm-up) on 3 simulated hosts",
        length.as_secs() / 60,
        warmup.as_secs() / 60
    ));
    let say = |host: &str, step: &str| println!("[{PREFIX}-{host}] {step}");
    let cluster = Cluster::create(PREFIX, 3, weave_bin.to_path_buf(), say)?;
    let hosts = cluster.hosts();
    cluster.launch_scenario(&[]);

    // Steady traffic: each host's steady container pings the next host's.
    let steady: Vec<String> = hosts
        .iter()
        .map(|h| h.run_container("", &format!("steady-{}", h.nickname())))
        .collect();
    let steady_addrs: Vec<String> = hosts
        .iter()
        .zip(&steady)
        .map(|(h, id)| first_addr(h, id))
        .collect::<Result<_>>()?;
    let seconds = length.as_secs().to_string();
    for (i, h) in hosts.iter().enumerate() {
        let next = &steady_addrs[(i + 1) % hosts.len()];
        h.wait_ping_within(&steady[i], next, REJOIN)?;
        let script = format!("ping -i 0.02 -s 1000 -w {seconds} {next} > /tmp/steady 2>&1");
        h.docker_ok(&["exec", "-d", &steady[i], "sh", "-c", &script]);
    }

    let mut memory: Vec<Memory> = hosts
        .iter()
        .map(|h| Memory {
            start: h.agent_rss_kib(),
            ..Memory::default()
        })
        .collect();
    let mut pools: Vec<VecDeque<String>> = vec![VecDeque::new(); hosts.len()];
    let started = Instant::now();
    let mut churned = 0usize;
    while started.elapsed() < length {
        if weave_tests::interrupted() {
            bail!("interrupted");
        }
        let i = churned % hosts.len();
        let h = &hosts[i];
        let id = h.run_container("", &format!("churn{churned}"));
        pools[i].push_back(id.clone());
        weave_tests::no_address_twice(&hosts.iter().collect::<Vec<_>>())?;
        for (j, addr) in steady_addrs.iter().enumerate() {
            if j != i {
                h.wait_ping_within(&id, addr, REJOIN)
                    .with_context(|| format!("churned container {churned} on {}", h.nickname()))?;
            }
        }
        if pools[i].len() > POOL
            && let Some(old) = pools[i].pop_front()
        {
            h.docker_ok(&["rm", "-f", &old]);
        }
        churned += 1;

        let elapsed = started.elapsed();
        for (m, h) in memory.iter_mut().zip(hosts) {
            let rss = h.agent_rss_kib();
            if elapsed >= warmup {
                m.after_warmup.get_or_insert(rss);
                m.max_after_warmup = m.max_after_warmup.max(rss);
            }
            m.end = rss;
        }
        if churned.is_multiple_of(10) {
            let rss: Vec<String> = memory.iter().map(|m| format!("{} KiB", m.end)).collect();
            println!(
                "soak: {:>4} s of {} s, {churned} containers churned, agent RSS {}",
                elapsed.as_secs(),
                length.as_secs(),
                rss.join(" / ")
            );
        }
    }

    let mut report = String::new();
    writeln!(
        report,
        "{churned} containers churned in {} s across 3 hosts; no address was ever in use twice.\n",
        started.elapsed().as_secs()
    )?;
    writeln!(
        report,
        "| host | agent RSS at start | after warm-up | max after warm-up | at end | steady pings |"
    )?;
    writeln!(report, "|---|---|---|---|---|---|")?;
    let mut leaks = Vec::new();
    for ((h, m), id) in hosts.iter().zip(&memory).zip(&steady) {
        let baseline = m.after_warmup.unwrap_or(m.start);
        let pings = steady_summary(h, id);
        writeln!(
            report,
            "| {} | {} KiB | {baseline} KiB | {} KiB | {} KiB | {pings} |",
            h.nickname(),
            m.start,
            m.max_after_warmup,
            m.end
        )?;
        if m.end > baseline + RSS_SLACK_KIB {
            leaks.push(format!(
                "{}: {baseline} KiB after warm-up, {} KiB at the end",
                h.nickname(),
                m.end
            ));
        }
    }
    let dir = util::target_dir().join("soak");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("report.md"), &report)?;
    println!("{report}");
    ensure!(
        leaks.is_empty(),
        "agent memory grew after warm-up (more than {RSS_SLACK_KIB} KiB): {}",
        leaks.join("; ")
    );
    Ok(report)
}

/// The first address `weave ps` shows for container `id`.
fn first_addr(h: &Host, id: &str) -> Result<String> {
    let entry = h
        .ps()
        .into_iter()
        .find(|e| id.starts_with(&e.id))
        .with_context(|| format!("{}: weave ps does not list {}", h.nickname(), &id[..12]))?;
    let cidr = entry
        .cidrs
        .first()
        .context("a listed container has an address")?;
    Ok(cidr.split('/').next().unwrap_or(cidr).to_string())
}

/// Stops the steady ping (SIGINT: it prints its statistics) and returns
/// its loss line.
fn steady_summary(h: &Host, id: &str) -> String {
    let _ = h.exec(id, &["killall", "-INT", "ping"]);
    let summary =
        weave_tests::wait_until("the steady ping's summary", Duration::from_secs(10), || {
            let out = h.exec(id, &["cat", "/tmp/steady"]);
            out.stdout
                .lines()
                .find(|l| l.contains("packet loss"))
                .map(|l| l.trim().to_string())
        });
    summary.unwrap_or_else(|e| format!("no summary: {e:#}"))
}
