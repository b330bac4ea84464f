//! Traffic between containers that the suites check end to end: a listener
//! (busybox `nc -l` into a file) and a large TCP stream whose size and SHA-1
//! are compared on both ends.

use std::time::Duration;

use crate::host::Host;
use crate::poll::wait_until;

/// Size of the stream [`assert_tcp_stream`] sends, in MiB.
pub const STREAM_MIB: u64 = 100;
/// Longest a 100 MiB transfer may take before its command is killed.
const STREAM_TIMEOUT: Duration = Duration::from_mins(5);

/// `sha1sum FILE` in a container.
#[track_caller]
pub fn sha1(h: &Host, container: &str, file: &str) -> String {
    let out = h.exec_ok(container, &["sha1sum", file]);
    out.split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("sha1sum printed {out:?}"))
        .to_string()
}

/// The size of `file` in a container.
#[track_caller]
pub fn file_size(h: &Host, container: &str, file: &str) -> u64 {
    h.exec_ok(container, &["stat", "-c", "%s", file])
        .trim()
        .parse()
        .unwrap()
}

/// Starts busybox `nc -l -p PORT > FILE` in the container, detached, and
/// waits until it listens. Its stdin is a pipe that stays open: on EOF there
/// busybox nc would close its sending half, and the client, seeing EOF,
/// would quit before it has sent everything.
#[track_caller]
pub fn listen(h: &Host, container: &str, port: u16, file: &str) {
    let script = format!("sleep 3600 | nc -l -p {port} > {file}");
    h.docker_ok(&["exec", "-d", container, "sh", "-c", &script]);
    wait_until(
        &format!("{container} to listen on port {port}"),
        Duration::from_secs(20),
        || {
            let out = h.exec(container, &["netstat", "-ltn"]);
            out.stdout.contains(&format!(":{port} ")).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Sends [`STREAM_MIB`] MiB of random data over TCP from `src` to `dst` (at
/// `dst_addr`, port `port`) with busybox `nc`, and compares size and SHA-1
/// on both ends. Returns the number of bytes sent.
#[track_caller]
pub fn assert_tcp_stream(src: (&Host, &str), dst: (&Host, &str), dst_addr: &str, port: u16) -> u64 {
    assert_tcp_stream_of(STREAM_MIB, src, dst, dst_addr, port)
}

/// [`assert_tcp_stream`] with `mib` MiB: a shorter stream where the path is
/// slow on purpose (a small path MTU, a password).
#[track_caller]
pub fn assert_tcp_stream_of(
    mib: u64,
    src: (&Host, &str),
    dst: (&Host, &str),
    dst_addr: &str,
    port: u16,
) -> u64 {
    let ((sh, sc), (dh, dc)) = (src, dst);
    let bytes = mib * 1024 * 1024;
    sh.exec_ok(
        sc,
        &[
            "dd",
            "if=/dev/urandom",
            "of=/tmp/sent",
            "bs=1048576",
            &format!("count={mib}"),
        ],
    );
    assert_eq!(file_size(sh, sc, "/tmp/sent"), bytes);
    dh.exec_ok(dc, &["rm", "-f", "/tmp/received"]);
    listen(dh, dc, port, "/tmp/received");
    let sent = sh.exec_within(
        sc,
        &["sh", "-c", &format!("nc {dst_addr} {port} < /tmp/sent")],
        STREAM_TIMEOUT,
    );
    assert!(sent.success(), "sending {mib} MiB:\n{sent}");
    // The receiver ends when the sender has closed its half and all arrived.
    wait_until(
        &format!("the receiver in {dc} to finish"),
        Duration::from_mins(1),
        || (!dh.exec(dc, &["pidof", "nc"]).success()).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        file_size(dh, dc, "/tmp/received"),
        bytes,
        "all {mib} MiB arrived"
    );
    assert_eq!(
        sha1(dh, dc, "/tmp/received"),
        sha1(sh, sc, "/tmp/sent"),
        "the stream arrived intact"
    );
    bytes
}
