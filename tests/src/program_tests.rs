//! The harness of the eBPF program suites (`classifier`, `fastdp_programs`):
//! each test on a thread of its own in a network namespace of its own, with
//! a freshly loaded eBPF object, so counters start at zero and nothing
//! touches the root namespace.

use std::thread;

use weave_agent::ebpf::Classifier;
use weave_agent::report::causes;

/// Runs `test` on a fresh thread inside a new network namespace
/// (`unshare(CLONE_NEWNET)`; it disappears with the thread), with a freshly
/// loaded [`Classifier`]. Fails loudly without root: `suite` names the test
/// binary in the message.
pub fn in_private_netns(suite: &str, test: impl FnOnce(&mut Classifier) + Send + 'static) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the {suite} tests load eBPF programs and create a network namespace: \
         they need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN). \
         Run them as root: `cargo test -p weave-tests --test {suite}`."
    );
    let outcome = thread::spawn(move || {
        // SAFETY: unshare takes no pointers; with CLONE_NEWNET it only moves
        // this (test-owned) thread into a new network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert!(
            rc == 0,
            "unshare(CLONE_NEWNET) failed: {}",
            std::io::Error::last_os_error()
        );
        let mut classifier = Classifier::load()
            .unwrap_or_else(|e| panic!("loading the eBPF object failed: {}", causes(&e)));
        test(&mut classifier);
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
