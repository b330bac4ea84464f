//! The `weave` command line: a thin client of the agent's control socket,
//! except `launch` (which starts the agent) and `reset` (which also works
//! when no agent runs).

mod attach;
mod connect;
mod dns;
mod expose;
mod launch;
mod plugin_proxy;
mod prime;
mod ps;
mod report;
mod reset;
mod rmpeer;
mod run;
mod setup_cni;
mod status;
mod stop;

use clap::{Parser, Subcommand};

use crate::config::Paths;

/// Weave Net, rebuilt in Rust with an eBPF dataplane: containers on every
/// host join one virtual switch, `weave`, get addresses automatically, and
/// are isolated by subnet. Peers gossip over TCP 6783 and carry frames as
/// VXLAN over UDP 6784. A read-only HTTP endpoint (`launch --status-addr`,
/// default 127.0.0.1:6782) serves the status, the JSON report, Prometheus
/// metrics and a live topology page.
///
/// Environment: `WEAVE_SOCKET`, `WEAVE_STATE_DIR` and `DOCKER_HOST` set the agent's
/// control socket, state directory and Docker endpoint (one set per agent when
/// several run side by side as simulated hosts).
#[derive(Parser, Debug)]
#[command(name = "weave", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub paths: Paths,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Launch(launch::Args),
    Connect(connect::ConnectArgs),
    Forget(connect::ForgetArgs),
    Stop(stop::Args),
    Reset(reset::Args),
    Rmpeer(rmpeer::Args),
    Prime(prime::Args),
    Run(run::Args),
    Attach(attach::AttachArgs),
    Detach(attach::DetachArgs),
    Ps(ps::Args),
    Status(status::Args),
    Report(report::Args),
    SetupCni(setup_cni::Args),
    DnsAdd(dns::AddArgs),
    DnsRemove(dns::RemoveArgs),
    DnsLookup(dns::LookupArgs),
    Expose(expose::ExposeArgs),
    Hide(expose::HideArgs),
    PluginProxy(plugin_proxy::Args),
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Launch(args) => launch::run(&cli.paths, args),
        Command::Connect(args) => connect::connect(&cli.paths, args),
        Command::Forget(args) => connect::forget(&cli.paths, args),
        Command::Stop(args) => stop::run(&cli.paths, args),
        Command::Reset(args) => reset::run(&cli.paths, args),
        Command::Rmpeer(args) => rmpeer::run(&cli.paths, args),
        Command::Prime(args) => prime::run(&cli.paths, &args),
        Command::Run(args) => run::run(&cli.paths, args),
        Command::Attach(args) => attach::attach(&cli.paths, args),
        Command::Detach(args) => attach::detach(&cli.paths, args),
        Command::Ps(args) => ps::run(&cli.paths, args),
        Command::Status(args) => status::run(&cli.paths, args),
        Command::Report(args) => report::run(&cli.paths, args),
        Command::SetupCni(args) => setup_cni::run(&cli.paths, args),
        Command::DnsAdd(args) => dns::add(&cli.paths, args),
        Command::DnsRemove(args) => dns::remove(&cli.paths, args),
        Command::DnsLookup(args) => dns::lookup(&cli.paths, args),
        Command::Expose(args) => expose::expose(&cli.paths, args),
        Command::Hide(args) => expose::hide(&cli.paths, args),
        Command::PluginProxy(args) => plugin_proxy::run(&cli.paths, args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weave: {}", crate::report::one_line(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
