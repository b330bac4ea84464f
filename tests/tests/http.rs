//! The read-only HTTP endpoint (issue 18), against real agents and real
//! clients: a Prometheus server (Debian's `prometheus`) scraping the three
//! agents of a simulated mesh, `promtool check metrics`, headless Chromium
//! rendering the topology page, and raw TCP clients for the rules (GET and
//! HEAD only, 404, 400, a flood of connections, a slow client).
//!
//! Everything runs inside the test's namespaces: Prometheus and Chromium in
//! host 1's, every client in the namespace of the agent it talks to. Every
//! wait polls against a deadline; no timing is asserted.
//!
//! Needs root, dockerd, prometheus, chromium and the `weave` binary
//! (`WEAVE_BIN`); `cargo xtask setup` installs the packages.

use std::fmt::Write as _;
use std::fs;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use weave_agent::mesh::ConnectionState;
use weave_agent::status::Status;
use weave_tests::{Cluster, Host, Netns, find_program, wait_for, workspace_root};

const STATUS_PORT: u16 = 6782;
/// How long Prometheus may take to see what the test waits for (it scrapes
/// every second).
const SCRAPE_WAIT: Duration = Duration::from_mins(1);
/// A socket read that takes longer than this means the endpoint hangs.
const READ_TIMEOUT: Duration = Duration::from_mins(1);

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client, so that the tests control every byte
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `request` (a whole request, headers and blank line included) to
/// `addr` from the current thread's namespace and reads the reply to the end.
fn exchange(addr: &str, request: &str) -> Result<Reply> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the reply from {addr}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no header end in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok(Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> String {
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: weave\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(r, "{k}: {v}\r\n");
    }
    r.push_str("\r\n");
    r
}

/// `METHOD target` on `addr`, from inside `ns`.
fn http(
    ns: &Netns,
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Reply> {
    let req = request(method, target, headers);
    ns.run_inside(|| exchange(addr, &req))?
}

fn get(ns: &Netns, addr: &str, target: &str) -> Reply {
    http(ns, addr, "GET", target, &[]).unwrap_or_else(|e| panic!("GET {target}: {e:#}"))
}

fn local() -> String {
    format!("127.0.0.1:{STATUS_PORT}")
}

/// Percent-encoding for a query value (Prometheus's `query=`).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[track_caller]
fn program(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!("\n\n*** `{name}` not found: `cargo xtask setup` installs Debian's package\n\n")
    })
}

/// Where this suite keeps what a person may want to look at afterwards.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("test-artifacts/http");
    fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------
// Prometheus in a simulated host's namespace
// ---------------------------------------------------------------------------

/// A Prometheus server running in a host's namespace, on its own port and
/// its own data directory, killed (and its directory removed) on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    listen: String,
}

impl Prometheus {
    fn start(ns: &Netns, dir: &Path, targets: &[String]) -> Result<Self> {
        let bin = program("prometheus");
        fs::create_dir_all(dir.join("data"))?;
        let targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: weave\n    static_configs:\n      - targets: [{targets}]\n"
            ),
        )?;
        // The namespace is the test's own: no other Prometheus can hold this port.
        let listen = "127.0.0.1:9090".to_string();
        let log = fs::File::create(dir.join("prometheus.log"))?;
        let child = ns
            .command(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        Ok(Self {
            child,
            dir: dir.to_path_buf(),
            listen,
        })
    }

    /// `query` through the HTTP API: each series' labels and value.
    fn query(&self, ns: &Netns, query: &str) -> Result<Vec<(serde_json::Value, f64)>> {
        let reply = http(
            ns,
            &self.listen,
            "GET",
            &format!("/api/v1/query?query={}", urlencode(query)),
            &[],
        )?;
        ensure!(reply.status == 200, "prometheus: {reply:?}");
        let v: serde_json::Value = serde_json::from_str(&reply.body)?;
        let result = v["data"]["result"]
            .as_array()
            .with_context(|| format!("no result in {v}"))?;
        result
            .iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .with_context(|| format!("no value in {r}"))?;
                Ok((r["metric"].clone(), value))
            })
            .collect()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}", self.log());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `promtool check metrics` on `text`: Ok, or its complaints. Its one lint
/// about Weave's own name `weave_ipam_unreachable_count` (a gauge with a
/// `_count` suffix, which dashboards made for Weave use) is allowed.
fn promtool_check(text: &str) -> Result<()> {
    let mut child = Command::new(program("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let complaints: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with("weave_ipam_unreachable_count non-histogram and non-summary metrics should not have \"_count\" suffix"))
        .map(ToString::to_string)
        .collect();
    // 0: clean; 3: lint findings only (parse errors exit 1).
    ensure!(
        matches!(out.status.code(), Some(0 | 3)) && complaints.is_empty(),
        "promtool check metrics ({}): {complaints:#?}",
        out.status
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// (a) Prometheus scrapes a three-host mesh; promtool accepts the metrics;
//     the topology page shows the mesh in headless Chromium
// ---------------------------------------------------------------------------

#[test]
fn prometheus_scrapes_the_mesh_and_the_page_shows_it() {
    let c = Cluster::new("http", 3);
    let [h1, h2, h3] = c.hosts() else {
        unreachable!()
    };
    let names = c.launch_scenario(&["--status-addr", &format!("0.0.0.0:{STATUS_PORT}")]);

    // /report is the snapshot of `weave report` and `weave status --json`.
    let report: Status = serde_json::from_str(&get(h1.netns(), &local(), "/report").body).unwrap();
    let cli: Status = serde_json::from_str(&h1.weave_ok(&["report"])).unwrap();
    assert_eq!(report.mesh.name.to_string(), names[0]);
    assert_eq!(cli.mesh.name, report.mesh.name);
    assert_eq!(report.mesh.peers.len(), 3);

    // promtool accepts what a plain client gets (the Prometheus text format).
    let metrics = get(h2.netns(), &local(), "/metrics");
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    promtool_check(&metrics.body).unwrap();
    fs::write(artifacts().join("metrics.txt"), &metrics.body).unwrap();

    let addr = |h: &Host| format!("{}:{STATUS_PORT}", h.lan_addr());
    let targets: Vec<String> = [h1, h2, h3].iter().map(|h| addr(h)).collect();
    let prom = Prometheus::start(h1.netns(), &h1.dir().join("prometheus"), &targets).unwrap();

    // Every peer: two established connections.
    wait_for(
        "prometheus to see 2 established connections on each peer",
        SCRAPE_WAIT,
        || {
            let rows = prom.query(
                h1.netns(),
                "sum by (instance) (weave_connections{state=\"established\"})",
            )?;
            let mut per: Vec<(String, f64)> = rows
                .iter()
                .map(|(m, v)| (m["instance"].as_str().unwrap_or("").to_string(), *v))
                .collect();
            per.sort_by(|a, b| a.0.cmp(&b.0));
            let want: Vec<(String, f64)> = targets.iter().map(|t| (t.clone(), 2.0)).collect();
            ensure!(per == want, "{per:?}");
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", prom.log()));

    // A counter grows when containers talk: frames leaving containers on h1.
    h1.run_container("10.2.1.1/24", "c1");
    h2.run_container("10.2.1.2/24", "c2");
    h1.wait_ping("c1", "10.2.1.2").unwrap();
    let query = format!(
        "sum(weave_ebpf_packets_total{{counter=\"from_container_passed\",instance=\"{}\"}})",
        targets[0]
    );
    let before = wait_for("prometheus to have scraped h1", SCRAPE_WAIT, || {
        prom.query(h1.netns(), &query)?
            .first()
            .map(|r| r.1)
            .context("no sample yet")
    })
    .unwrap();
    // 20 echo requests of 98 bytes.
    const ECHO_BYTES: f64 = 1960.0;
    // And the traffic with h2, by neighbour, in bytes of the containers'
    // frames (whichever data plane carried them): 20 echo requests of 98
    // bytes (Ethernet, IPv4, ICMP, 56 bytes of data) at least.
    let to_h2 = format!(
        "sum(weave_peer_bytes_total{{direction=\"sent\",nickname=\"h2\",instance=\"{}\"}})",
        targets[0]
    );
    let sent_before = prom
        .query(h1.netns(), &to_h2)
        .unwrap()
        .first()
        .map_or(0.0, |r| r.1);
    let out = h1.exec("c1", &["ping", "-c", "20", "-i", "0.05", "10.2.1.2"]);
    assert!(out.success(), "{out}");
    wait_for("the counters to grow in prometheus", SCRAPE_WAIT, || {
        let now = prom.query(h1.netns(), &query)?.first().map_or(0.0, |r| r.1);
        ensure!(now >= before + 20.0, "{before} then {now}");
        let sent = prom.query(h1.netns(), &to_h2)?.first().map_or(0.0, |r| r.1);
        ensure!(
            sent >= sent_before + ECHO_BYTES,
            "bytes sent to h2: {sent_before} then {sent}"
        );
        Ok(())
    })
    .unwrap();
    drop(prom);

    // weaveDNS: c1 and c2 are names on every peer.
    wait_for("weave_dns_entries to count c1 and c2", SCRAPE_WAIT, || {
        let m = get(h3.netns(), &local(), "/metrics").body;
        let entries = m
            .lines()
            .find_map(|l| l.strip_prefix("weave_dns_entries "))
            .context("no weave_dns_entries")?;
        ensure!(entries.trim() == "2", "weave_dns_entries {entries}");
        Ok(())
    })
    .unwrap();

    // Automatic addresses on every host: the allocation ring is shared out
    // and the page draws its shares.
    for (i, h) in [h1, h2, h3].iter().enumerate() {
        h.run_container("", &format!("auto{i}"));
    }

    // The topology page, rendered by headless Chromium in h1's namespace.
    page_in_chromium(h1, &names, &["h1", "h2", "h3"]);
}

/// Opens the page in headless Chromium inside `h`'s namespace: the rendered
/// DOM names every peer and shows the connections established; the
/// screenshot goes to `target/test-artifacts/http/topology.png`.
fn page_in_chromium(h: &Host, names: &[String], nicknames: &[&str]) {
    let chromium = program("chromium");
    let profile = h.dir().join("chromium");
    let url = format!("http://{}/", local());
    let run = |extra: &[&str]| -> String {
        let mut cmd = h.netns().command(&chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Lets the page's first fetch of /report and its drawing finish
            // before the DOM is dumped or the screenshot taken.
            "--virtual-time-budget=10000",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(&url)
        .env("HOME", h.dir())
        .stdin(Stdio::null());
        let out = weave_tests::run(&mut cmd, Duration::from_mins(2))
            .unwrap_or_else(|e| panic!("chromium: {e:#}"));
        assert!(out.success(), "chromium: {out}");
        out.stdout
    };
    let dom = wait_for(
        "the page to show the whole mesh",
        Duration::from_mins(1),
        || {
            let dom = run(&["--dump-dom"]);
            for name in names
                .iter()
                .map(String::as_str)
                .chain(nicknames.iter().copied())
            {
                ensure!(dom.contains(name), "{name} not on the page:\n{dom}");
            }
            let established = dom.matches("data-state=\"established\"").count();
            // Three edges in the graph, two rows in the connections table.
            ensure!(established >= 5, "{established} established shown:\n{dom}");
            ensure!(dom.contains(">established<"), "no connection state shown");
            // Without a password each established connection says so.
            ensure!(dom.contains(">clear<"), "no connection's encryption shown");
            // The traffic with h2 (the containers pinged it), with its rate
            // once the page has polled twice.
            ensure!(
                dom.contains(&format!("data-peer=\"{}\"", names[1])),
                "no traffic row for h2:\n{dom}"
            );
            ensure!(
                dom.contains("bit/s<"),
                "no rate on the graph's edges:\n{dom}"
            );
            Ok(dom)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    fs::write(artifacts().join("topology.html"), &dom).unwrap();

    let shot = artifacts().join("topology.png");
    let _ = fs::remove_file(&shot);
    run(&[&format!("--screenshot={}", shot.display())]);
    let png =
        fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}

// ---------------------------------------------------------------------------
// (b) The rules: read-only, localhost by default, bounded, never in the way
// ---------------------------------------------------------------------------

fn host(test: &str) -> Host {
    Host::new(test, "h1")
}

#[test]
fn the_endpoint_is_read_only_bounded_and_never_blocks_the_agent() {
    let h = host("httprules");
    let ns = h.netns();
    h.weave_ok(&["launch"]);

    // Localhost only, by default.
    let listening = ns.exec("ss", &["-Hltn", &format!("sport = :{STATUS_PORT}")]);
    assert!(
        listening
            .stdout
            .contains(&format!("127.0.0.1:{STATUS_PORT}"))
            && listening.stdout.lines().count() == 1,
        "{listening}"
    );

    // The text of `weave status`, section by section; JSON on request.
    let status = get(ns, &local(), "/status");
    assert_eq!(status.status, 200);
    assert_eq!(
        status.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(
        status.body.contains("        Service: router\n"),
        "{}",
        status.body
    );
    for section in [
        "peers",
        "connections",
        "targets",
        "ipam",
        "dataplane",
        "dns",
    ] {
        let text = get(ns, &local(), &format!("/status/{section}"));
        assert_eq!(text.status, 200, "{section}: {text:?}");
        let cli = h.weave_ok(&["status", section]);
        if section != "dataplane" {
            // (Counters move between the two reads.)
            assert_eq!(text.body, cli, "{section}");
        }
        for json in [
            http(
                ns,
                &local(),
                "GET",
                &format!("/status/{section}?format=json"),
                &[],
            )
            .unwrap(),
            http(
                ns,
                &local(),
                "GET",
                &format!("/status/{section}"),
                &[("Accept", "application/json")],
            )
            .unwrap(),
        ] {
            assert_eq!(json.status, 200);
            assert_eq!(json.header("content-type"), Some("application/json"));
            serde_json::from_str::<serde_json::Value>(&json.body).unwrap();
        }
    }
    let whole: Status =
        serde_json::from_str(&get(ns, &local(), "/status?format=json").body).unwrap();
    assert_eq!(whole.mesh.nickname, "h1");

    // HEAD: the headers, no body.
    let head = http(ns, &local(), "HEAD", "/report", &[]).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "{head:?}");

    // Never a command: anything but GET and HEAD is refused, whatever the path.
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/status", "/report", "/nope"] {
            let r = http(ns, &local(), method, path, &[("Content-Length", "0")]).unwrap();
            assert_eq!(r.status, 405, "{method} {path}: {r:?}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"));
        }
    }
    assert_eq!(get(ns, &local(), "/nope").status, 404);
    assert_eq!(get(ns, &local(), "/status/nope").status, 404);
    for bad in [
        "/status?format=xml",
        "/status?fmt=json",
        "/metrics?x=1",
        "/status?format=json&format=text",
    ] {
        let r = get(ns, &local(), bad);
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    // The page comes with a policy that forbids fetching anything elsewhere.
    let page = get(ns, &local(), "/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<svg id=\"graph\""));
    assert!(
        page.header("content-security-policy")
            .is_some_and(|p| p.contains("default-src 'none'")),
        "{page:?}"
    );
    assert!(!page.body.contains("http://") || !page.body.contains("src=\"http"));

    // A flood of idle connections and a slow client: the agent goes on
    // answering `weave status`, and the endpoint answers again once they are gone.
    ns.run_inside(|| {
        // The slow client first, so that it holds one of the endpoint's
        // connection slots: half a request line, then nothing.
        let mut slow = TcpStream::connect(local()).unwrap();
        slow.write_all(b"GET /sta").unwrap();
        let flood: Vec<TcpStream> = (0..300)
            .filter_map(|_| TcpStream::connect(local()).ok())
            .collect();
        assert!(flood.len() > 100, "{} connections", flood.len());
        let out = h.weave(&["status"]);
        assert!(
            out.success() && out.stdout.contains("Service: router"),
            "{out}"
        );
        let ps = h.weave(&["ps"]);
        assert!(ps.success(), "{ps}");
        // The slow client is cut off: its read ends (EOF, reset or a 408)
        // instead of waiting for ever.
        slow.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut buf = Vec::new();
        match slow.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the slow client was never cut off: {e}"),
        }
        let answer = String::from_utf8_lossy(&buf);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
        drop(flood);
    })
    .unwrap();
    wait_for(
        "the endpoint to answer after the flood",
        Duration::from_mins(1),
        || {
            let r = http(ns, &local(), "GET", "/status", &[])?;
            ensure!(r.status == 200, "{r:?}");
            Ok(())
        },
    )
    .unwrap();

    // A slow reader cannot hold the agent either: it asks, never reads, and
    // `weave status` still answers.
    ns.run_inside(|| {
        let readers: Vec<TcpStream> = (0..40)
            .filter_map(|_| {
                let mut s = TcpStream::connect(local()).ok()?;
                s.write_all(request("GET", "/report", &[]).as_bytes())
                    .ok()?;
                s.shutdown(Shutdown::Write).ok()?;
                Some(s)
            })
            .collect();
        let out = h.weave(&["status"]);
        assert!(out.success(), "{out}");
        drop(readers);
    })
    .unwrap();
}

#[test]
fn status_addr_can_be_moved_turned_off_and_is_checked() {
    let h = host("httpaddr");
    let ns = h.netns();
    let refused = |addr: &str| {
        ns.run_inside(|| {
            matches!(TcpStream::connect(addr), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
        })
        .unwrap()
    };

    // Off: nothing listens.
    h.weave_ok(&["launch", "--status-addr", "off"]);
    assert!(refused(&local()));
    h.weave_ok(&["stop"]);

    // The environment variable, as in Weave.
    let out = h.weave_env(&["launch"], &[("WEAVE_STATUS_ADDR", "127.0.0.1:7782")]);
    assert!(out.success(), "{out}");
    assert_eq!(get(ns, "127.0.0.1:7782", "/status").status, 200);
    assert!(refused(&local()));
    h.weave_ok(&["stop"]);

    // Nonsense is refused with a clear error, and no agent starts.
    let out = h.weave(&["launch", "--status-addr", "localhost"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("--status-addr") && out.stderr.contains("not an address"),
        "{out}"
    );

    // A port someone else holds fails the launch, saying which.
    let holder = ns
        .run_inside(|| TcpListener::bind(local()).unwrap())
        .unwrap();
    let out = h.weave(&["launch"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("status endpoint") && out.stderr.contains("6782"),
        "{out}"
    );
    drop(holder);
    h.weave_ok(&["launch"]);
    let st = get(ns, &local(), "/report");
    assert_eq!(st.status, 200);
    let st: Status = serde_json::from_str(&st.body).unwrap();
    assert!(
        st.mesh
            .connections
            .iter()
            .all(|c| c.state != ConnectionState::Established)
    );
}

/// A `weave run` waiting for the allocation ring (its peer is not up yet)
/// shows in the metrics as a pending allocation, and the endpoint and
/// `weave status` answer while it waits; once the peer comes, the run gets
/// its address.
#[test]
fn a_run_waiting_for_the_ring_is_a_pending_allocate() {
    let c = Cluster::new("httpwait", 2);
    let [h1, h2] = c.hosts() else { unreachable!() };
    // h2 runs no agent yet: h1 waits for consensus with it.
    h1.launch(&[&h2.lan_addr()]);
    let mut run = h1
        .weave_command(&[
            "run",
            "--name",
            "waiting",
            weave_tests::IMAGE,
            "sleep",
            "3600",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pending = |want: u32| {
        move || {
            let m = http(h1.netns(), &local(), "GET", "/metrics", &[])?;
            ensure!(m.status == 200, "{m:?}");
            let line = format!("weave_ipam_pending_allocates {want}\n");
            ensure!(m.body.contains(&line), "no {line:?} in\n{}", m.body);
            Ok(())
        }
    };
    let waited = wait_for(
        "the wait to show in /metrics",
        Duration::from_secs(20),
        pending(1),
    );
    // `weave status` answers meanwhile too, saying what the run waits for.
    let status = h1.weave(&["status"]);
    if let Err(e) = waited.and_then(|()| {
        ensure!(
            status.success() && status.stdout.contains("waiting for consensus"),
            "weave status while the run waits: {status}"
        );
        Ok(())
    }) {
        let _ = run.kill();
        panic!("{e:#}");
    }
    h2.launch(&[&h1.lan_addr()]);
    let out = run.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the run, once the ring formed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("no pending allocate", Duration::from_secs(10), pending(0)).unwrap();
}
