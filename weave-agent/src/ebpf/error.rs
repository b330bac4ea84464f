use aya::{EbpfError, maps::MapError, programs::ProgramError};

/// Why loading, attaching or reading the eBPF dataplane failed.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The embedded object could not be parsed or its maps not created.
    #[error("cannot load the eBPF object")]
    Load {
        #[source]
        source: EbpfError,
    },
    /// The object lacks a program or map the loader expects: the object and
    /// the loader were built from different sources.
    #[error("the eBPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    /// The kernel (usually its verifier) refused a program.
    #[error("the kernel refused eBPF program {prog}")]
    LoadProgram {
        prog: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot attach eBPF program {prog} to {iface}")]
    Attach {
        prog: &'static str,
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("cannot detach eBPF program {prog} from {iface}")]
    Detach {
        prog: &'static str,
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("cannot {op} eBPF map {map}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: MapError,
    },
    #[error("no network interface named {iface}")]
    NoSuchInterface { iface: String },
    #[error("cannot look up network interface {iface}")]
    Interface {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pin the classifier links of {iface} in bpffs")]
    Pin {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BPF_PROG_TEST_RUN of {prog} failed")]
    TestRun {
        prog: String,
        #[source]
        source: ProgramError,
    },
    #[error("{what} needs {needs}")]
    Unsupported {
        what: &'static str,
        needs: &'static str,
    },
}
