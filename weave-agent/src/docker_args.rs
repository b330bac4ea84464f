//! The `docker run` arguments `weave run` accepts, parsed into a container spec.
//!
//! `weave run` always starts the container detached and prints its id (as
//! Weave did); `-i`/`-t` keep their meaning for a later `docker attach`.
//! Only the flags below are understood: an unknown flag is an error rather
//! than something silently ignored.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub image: String,
    pub cmd: Vec<String>,
    pub name: Option<String>,
    pub env: Vec<String>,
    pub binds: Vec<String>,
    pub labels: Vec<String>,
    pub hostname: Option<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Option<String>,
    pub tty: bool,
    pub open_stdin: bool,
    pub auto_remove: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DockerArgsError {
    #[error(
        "unknown docker run flag '{0}' (supported: -d -i -t --name -e -v -l -h -w -u --entrypoint --rm --privileged --cap-add --net=none)"
    )]
    UnknownFlag(String),
    #[error("docker run flag '{0}' needs a value")]
    MissingValue(String),
    #[error(
        "--net={0} is not supported: weave gives the container its network (use --net=none or leave it out)"
    )]
    UnsupportedNetwork(String),
    #[error("no image given")]
    MissingImage,
}

/// Flags that take a value, by every spelling.
fn value_flag(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "--name" => "name",
        "-e" | "--env" => "env",
        "-v" | "--volume" => "volume",
        "-l" | "--label" => "label",
        "-h" | "--hostname" => "hostname",
        "-w" | "--workdir" => "workdir",
        "-u" | "--user" => "user",
        "--entrypoint" => "entrypoint",
        "--net" | "--network" => "net",
        "--cap-add" => "cap-add",
        _ => return None,
    })
}

impl ContainerSpec {
    fn set(&mut self, key: &str, value: String) -> Result<(), DockerArgsError> {
        match key {
            "name" => self.name = Some(value),
            "env" => self.env.push(value),
            "volume" => self.binds.push(value),
            "label" => self.labels.push(value),
            "hostname" => self.hostname = Some(value),
            "workdir" => self.workdir = Some(value),
            "user" => self.user = Some(value),
            "entrypoint" => self.entrypoint = Some(value),
            "cap-add" => self.cap_add.push(value),
            "net" if value == "none" => {}
            "net" => return Err(DockerArgsError::UnsupportedNetwork(value)),
            _ => unreachable!("value_flag only returns known keys"),
        }
        Ok(())
    }

    fn set_switch(&mut self, c: char) -> Result<(), DockerArgsError> {
        match c {
            'd' => {}
            'i' => self.open_stdin = true,
            't' => self.tty = true,
            _ => return Err(DockerArgsError::UnknownFlag(format!("-{c}"))),
        }
        Ok(())
    }
}

pub fn parse_run_args(args: &[String]) -> Result<ContainerSpec, DockerArgsError> {
    let mut spec = ContainerSpec::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if !arg.starts_with('-') || arg == "-" {
            spec.image.clone_from(arg);
            spec.cmd = it.cloned().collect();
            return Ok(spec);
        }
        // --flag=value
        if let Some((flag, value)) = arg.split_once('=') {
            let key =
                value_flag(flag).ok_or_else(|| DockerArgsError::UnknownFlag(flag.to_string()))?;
            spec.set(key, value.to_string())?;
            continue;
        }
        if let Some(key) = value_flag(arg) {
            let value = it
                .next()
                .ok_or_else(|| DockerArgsError::MissingValue(arg.clone()))?;
            spec.set(key, value.clone())?;
            continue;
        }
        match arg.as_str() {
            "--detach" => {}
            "--interactive" => spec.open_stdin = true,
            "--tty" => spec.tty = true,
            "--rm" => spec.auto_remove = true,
            "--privileged" => spec.privileged = true,
            // Combined short switches: -itd.
            short if !short.starts_with("--") => {
                for c in short[1..].chars() {
                    spec.set_switch(c)?;
                }
            }
            other => return Err(DockerArgsError::UnknownFlag(other.to_string())),
        }
    }
    Err(DockerArgsError::MissingImage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<ContainerSpec, DockerArgsError> {
        parse_run_args(&v.iter().map(ToString::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn typical_weave_run() {
        let s = parse(&[
            "-itd",
            "--name=c1",
            "-e",
            "A=1",
            "--env=B=2",
            "-v",
            "/x:/y",
            "busybox",
            "sleep",
            "-x",
            "3600",
        ])
        .unwrap();
        assert!(s.tty && s.open_stdin);
        assert_eq!(s.name.as_deref(), Some("c1"));
        assert_eq!(s.env, vec!["A=1", "B=2"]);
        assert_eq!(s.binds, vec!["/x:/y"]);
        assert_eq!(s.image, "busybox");
        // Flags after the image belong to the command.
        assert_eq!(s.cmd, vec!["sleep", "-x", "3600"]);
    }

    #[test]
    fn net_none_is_accepted_others_refused() {
        assert!(parse(&["--net=none", "busybox"]).is_ok());
        assert!(parse(&["--network", "none", "busybox"]).is_ok());
        assert_eq!(
            parse(&["--net=host", "busybox"]),
            Err(DockerArgsError::UnsupportedNetwork("host".into()))
        );
    }

    #[test]
    fn unknown_flags_and_missing_parts_are_errors() {
        assert_eq!(
            parse(&["--frobnicate", "busybox"]),
            Err(DockerArgsError::UnknownFlag("--frobnicate".into()))
        );
        assert_eq!(
            parse(&["--bogus=1", "busybox"]),
            Err(DockerArgsError::UnknownFlag("--bogus".into()))
        );
        assert_eq!(
            parse(&["-itx", "busybox"]),
            Err(DockerArgsError::UnknownFlag("-x".into()))
        );
        assert_eq!(
            parse(&["--name"]),
            Err(DockerArgsError::MissingValue("--name".into()))
        );
        assert_eq!(parse(&["-d"]), Err(DockerArgsError::MissingImage));
    }
}
