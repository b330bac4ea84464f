//! Project tasks for weave-rs, run as `cargo xtask <task>`.
//!
//! One module per task; each has its `Args` (whose doc comments are the help
//! text) and a `run` function. Dependencies stay few on purpose.

mod bench;
mod build;
mod demo;
mod demo_swarm;
#[cfg(test)]
mod deploy_check;
mod fuzz;
mod image;
mod lint;
mod plugin;
mod run;
mod scale;
mod setup;
mod soak;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Project tasks for weave-rs: set up this machine, build, build the container image and the Docker plugin, test, lint, run the agent, show the demo, benchmark, measure at scale, soak.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    Setup(setup::Args),
    Soak(soak::Args),
    Build(build::Args),
    Image(image::Args),
    Plugin(plugin::Args),
    Test(test::Args),
    Run(run::Args),
    Demo(demo::Args),
    Bench(bench::Args),
    Scale(scale::Args),
    Fuzz(fuzz::Args),
    Lint(lint::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Setup(args) => setup::run(args),
        Task::Soak(args) => soak::run(args),
        Task::Build(args) => build::run(args).map(drop),
        Task::Image(args) => image::run(args),
        Task::Plugin(args) => plugin::run(args),
        Task::Test(args) => test::run(args),
        Task::Run(args) => run::run(args),
        Task::Demo(args) => demo::run(args),
        Task::Bench(args) => bench::run(args),
        Task::Scale(args) => scale::run(args),
        Task::Fuzz(args) => fuzz::run(args),
        Task::Lint(args) => lint::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain, without anyhow's backtrace: these are user-facing.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
