//! `weave report`: the whole snapshot as JSON, for scripts.

use anyhow::{Context as _, bail};

use crate::api::{Reply, Request, client};
use crate::config::Paths;

/// Print the agent's report as JSON, for scripts.
///
/// One object with everything `weave status` and its sections show: the
/// same snapshot as `weave status --json` and the HTTP endpoint's `/report`.
#[derive(clap::Args, Debug)]
pub struct Args;

pub(super) fn run(paths: &Paths, _args: Args) -> anyhow::Result<()> {
    let Reply::Status(status) = client::call(&paths.socket, &Request::Status)? else {
        bail!("unexpected reply from the agent");
    };
    let json = serde_json::to_string_pretty(&status).context("encoding the report as JSON")?;
    println!("{json}");
    Ok(())
}
