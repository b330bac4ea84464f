//! `weave-net`, the CNI plugin: a container runtime (containerd, CRI-O,
//! kubelet through either) runs it with `CNI_*` variables and a network
//! configuration on stdin; it asks the local weave agent, over the control
//! socket, to attach or detach the pod, and prints a CNI result or error.
//!
//! Everything here but [`main`] is pure: [`run`] takes the environment, the
//! configuration and a way to call the agent, so every verb is unit-tested
//! against a fake agent.

pub mod conf;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use self::env::{Env, Verb};
use self::error::{CniError, code};
use self::version::{LATEST, Version};
use crate::api::client::{self, ClientError};
use crate::api::{CniAttachment, Reply, Request};

/// Help for `weave-net --help`: a CNI plugin is run by a runtime, not by hand.
pub const HELP: &str = "\
weave-net: the weave CNI plugin (CNI spec 1.0.0 and 1.1.0; VERSION also answers 0.3.0, 0.3.1, 0.4.0)

A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC or VERSION),
CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME set and the network configuration on stdin:

  {\"cniVersion\": \"1.0.0\", \"name\": \"weave\", \"type\": \"weave-net\",
   \"socket\": \"/run/weave/weave.sock\", \"addresses\": [\"net:default\"]}

It asks the local weave agent (started by 'weave launch'; \"socket\" is its control socket)
to attach the pod: a veth pair from the weave bridge with the interface CNI_IFNAME inside
the pod, addresses from the agent's allocation ring (\"addresses\" as 'weave attach' takes
them: net:CIDR, net:default, ADDRESS/PREFIX), and the same isolation as any container.
'weave setup-cni' installs this binary and a network configuration list.";

/// How the plugin reaches the agent (the real socket, or a test's fake).
pub trait Agent {
    fn call(&mut self, socket: &Path, request: &Request) -> Result<Reply, ClientError>;
}

/// The control socket.
pub struct Socket;

impl Agent for Socket {
    fn call(&mut self, socket: &Path, request: &Request) -> Result<Reply, ClientError> {
        client::call(socket, request)
    }
}

/// What the plugin prints: a result (exit 0), nothing (exit 0), or an error
/// result in the given version (exit 1).
#[derive(Debug)]
pub enum Outcome {
    Result(Value),
    Nothing,
    Error {
        cni_version: String,
        error: CniError,
    },
}

/// One invocation: the verb from the environment, applied.
pub fn run(var: impl Fn(&str) -> Option<String>, stdin: &[u8], agent: &mut dyn Agent) -> Outcome {
    let fail = |error: CniError| Outcome::Error {
        cni_version: conf::claimed_version(stdin)
            .filter(|v| Version::supported(v).is_some())
            .unwrap_or_else(|| LATEST.to_owned()),
        error,
    };
    let env = match Env::parse(var) {
        Ok(env) => env,
        Err(e) => return fail(e),
    };
    if env.verb == Verb::Version {
        return match serde_json::from_slice::<Value>(stdin) {
            // The runtime asks which versions we speak: any version it
            // speaks itself is echoed, even one we do not.
            Ok(v) => Outcome::Result(result::version_result(
                v.get("cniVersion")
                    .and_then(Value::as_str)
                    .unwrap_or(LATEST),
            )),
            Err(_) if stdin.iter().all(u8::is_ascii_whitespace) => {
                Outcome::Result(result::version_result(LATEST))
            }
            Err(e) => fail(CniError::new(
                code::DECODE,
                "cannot decode the input",
                e.to_string(),
            )),
        };
    }
    let conf = match conf::parse(stdin) {
        Ok(conf) => conf,
        Err(e) => return fail(e),
    };
    match verb(&env, &conf, agent) {
        Ok(out) => out,
        Err(error) => Outcome::Error {
            cni_version: conf.cni_version.clone(),
            error,
        },
    }
}

fn verb(env: &Env, conf: &conf::NetConf, agent: &mut dyn Agent) -> Result<Outcome, CniError> {
    let needs = |min: Version, verb: &str| {
        if conf.version < min {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "{verb} needs cniVersion 0.4.0 or later for CHECK, 1.1.0 for STATUS and GC; the configuration says {}",
                    conf.cni_version
                ),
            ));
        }
        Ok(())
    };
    let attachment = || CniAttachment {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    };
    let netns = || env.netns.clone().unwrap_or_default();
    let mut call = |request: Request| {
        agent
            .call(&conf.socket, &request)
            .map_err(|e| agent_error(env.verb, e))
    };
    match env.verb {
        Verb::Add => match call(Request::CniAdd {
            attachment: attachment(),
            netns: netns(),
            addrs: conf.addrs.clone(),
        })? {
            Reply::CniAttached {
                host_ifname,
                mac,
                mtu,
                cidrs,
                routes,
                dns,
            } => Ok(Outcome::Result(result::add_result(
                &conf.cni_version,
                conf.version,
                &result::Attached {
                    ifname: &env.ifname,
                    netns: &netns(),
                    host_ifname: &host_ifname,
                    mac,
                    mtu,
                    cidrs: &cidrs,
                    routes: &routes,
                    dns: dns.as_ref(),
                },
                conf.prev_result.as_ref(),
            ))),
            other => Err(unexpected(&other)),
        },
        Verb::Del => {
            call(Request::CniDel {
                attachment: attachment(),
            })?;
            Ok(Outcome::Nothing)
        }
        Verb::Check => {
            needs(Version::V0_4_0, "CHECK")?;
            call(Request::CniCheck {
                attachment: attachment(),
                netns: netns(),
            })?;
            Ok(Outcome::Nothing)
        }
        Verb::Status => {
            needs(Version::V1_1_0, "STATUS")?;
            call(Request::Ping)?;
            Ok(Outcome::Nothing)
        }
        Verb::Gc => {
            needs(Version::V1_1_0, "GC")?;
            let valid = conf.valid_attachments.clone().ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "invalid network configuration",
                    "GC needs cni.dev/valid-attachments",
                )
            })?;
            call(Request::CniGc { valid })?;
            Ok(Outcome::Nothing)
        }
        Verb::Version => unreachable!("VERSION is answered before the configuration is read"),
    }
}

/// The agent's failures in CNI's terms: an agent that is not running is
/// "not available" to STATUS and "try again later" to the other verbs.
fn agent_error(verb: Verb, e: ClientError) -> CniError {
    match e {
        ClientError::NotRunning { .. } if verb == Verb::Status => CniError::new(
            code::NOT_AVAILABLE,
            "the weave agent is not running",
            e.to_string(),
        ),
        ClientError::NotRunning { .. } => CniError::new(
            code::TRY_AGAIN_LATER,
            "the weave agent is not running",
            e.to_string(),
        ),
        ClientError::Io { .. } => CniError::new(
            code::IO_FAILURE,
            "cannot talk to the weave agent",
            e.to_string(),
        ),
        ClientError::Garbled(_) => CniError::new(
            code::AGENT_GARBLED,
            "the weave agent's reply is garbled",
            e.to_string(),
        ),
        ClientError::Refused(reason) => {
            CniError::new(code::AGENT_REFUSED, "the weave agent refused", reason)
        }
    }
}

fn unexpected(reply: &Reply) -> CniError {
    CniError::new(
        code::AGENT_GARBLED,
        "the weave agent's reply is garbled",
        format!("unexpected reply {reply:?}"),
    )
}

/// The `weave-net` binary.
pub fn main() -> ExitCode {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "--help" || a == "-h")
    {
        println!("{HELP}");
        return ExitCode::SUCCESS;
    }
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "--version" || a == "-V")
    {
        println!("weave-net {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(|k| std::env::var(k).ok(), &stdin, &mut Socket),
        Err(e) => Outcome::Error {
            cni_version: LATEST.to_owned(),
            error: CniError::new(code::IO_FAILURE, "cannot read stdin", e.to_string()),
        },
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Outcome::Result(v) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Outcome::Nothing => ExitCode::SUCCESS,
        Outcome::Error { cni_version, error } => {
            // The runtime reads stdout; a person reading logs gets stderr.
            eprintln!("weave-net: {error}");
            let _ = writeln!(out, "{}", error.to_json(&cni_version));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
