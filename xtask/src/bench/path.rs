//! The paths between two containers that the bench compares.

/// A way for traffic to go from one container to another.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Path {
    /// Both containers on one host's `weave` bridge: no overlay at all.
    Native,
    /// Linux's own VXLAN device on each host, enslaved to `weave`: the in-kernel reference.
    Vxlan,
    /// weave's plain data plane (`weave launch --dataplane plain`).
    Plain,
    /// weave's in-kernel data plane (`weave launch --dataplane fastdp`: eBPF VXLAN).
    Fastdp,
    /// weave's accelerated data plane (`weave launch --dataplane xdp`, `AF_XDP`).
    Xdp,
    /// The plain data plane, encrypted (`--dataplane plain --password`).
    PlainEncrypted,
    /// The accelerated data plane, encrypted (`--dataplane xdp --password`).
    XdpEncrypted,
    /// The accelerated data plane with a worker that never sleeps
    /// (`--dataplane xdp --busy-poll`): what a spare core buys.
    XdpBusyPoll,
    /// The accelerated data plane, encrypted with ChaCha20-Poly1305 whatever
    /// the CPU (`--dataplane xdp --password --cipher chacha20-poly1305`):
    /// what AES-256-GCM buys `xdp-encrypted` where the CPU has it.
    XdpEncryptedChacha,
}

/// The `--cipher` of `xdp-encrypted-chacha`.
const CHACHA: &str = "chacha20-poly1305";

/// The password of the encrypted paths (the hosts are simulated and gone after the run).
pub(super) const PASSWORD: &str = "weave-bench-not-a-secret";

impl Path {
    pub(super) const ALL: [Self; 9] = [
        Self::Native,
        Self::Vxlan,
        Self::Plain,
        Self::Fastdp,
        Self::Xdp,
        Self::PlainEncrypted,
        Self::XdpEncrypted,
        Self::XdpBusyPoll,
        Self::XdpEncryptedChacha,
    ];

    /// Name on the command line (`--only`) and in the JSON file.
    pub(super) const fn key(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Vxlan => "vxlan",
            Self::Plain => "plain",
            Self::Fastdp => "fastdp",
            Self::Xdp => "xdp",
            Self::PlainEncrypted => "plain-encrypted",
            Self::XdpEncrypted => "xdp-encrypted",
            Self::XdpBusyPoll => "xdp-busy-poll",
            Self::XdpEncryptedChacha => "xdp-encrypted-chacha",
        }
    }

    /// Name in tables and plots.
    pub(super) const fn label(self) -> &'static str {
        match self {
            Self::Native => "same host (bridge)",
            Self::Vxlan => "kernel VXLAN",
            Self::Plain => "weave plain",
            Self::Fastdp => "weave fastdp",
            Self::Xdp => "weave xdp",
            Self::PlainEncrypted => "weave plain + password",
            Self::XdpEncrypted => "weave xdp + password",
            Self::XdpBusyPoll => "weave xdp + busy polling",
            Self::XdpEncryptedChacha => "weave xdp + password, ChaCha20-Poly1305",
        }
    }

    /// Whether the two containers are on different hosts.
    pub(super) fn crosses_hosts(self) -> bool {
        self != Self::Native
    }

    /// Whether weave's own overlay carries the traffic (the agents connect).
    pub(super) const fn uses_overlay(self) -> bool {
        !matches!(self, Self::Native | Self::Vxlan)
    }

    /// `weave launch` flags of this path. Native and kernel VXLAN pin `plain`
    /// so that `auto` picking the accelerated path one day cannot put XDP
    /// programs (which turn off the LAN veth's TSO) under the references.
    pub(super) fn launch_flags(self) -> Vec<&'static str> {
        let mut flags = vec!["--dataplane", self.dataplane()];
        if self.encrypted() {
            flags.extend(["--password", PASSWORD]);
        }
        if self == Self::XdpBusyPoll {
            flags.push("--busy-poll");
        }
        if let Some(cipher) = self.required_cipher() {
            flags.extend(["--cipher", cipher]);
        }
        flags
    }

    /// The `--dataplane` value of this path.
    pub(super) const fn dataplane(self) -> &'static str {
        match self {
            Self::Xdp | Self::XdpEncrypted | Self::XdpBusyPoll | Self::XdpEncryptedChacha => "xdp",
            Self::Fastdp => "fastdp",
            _ => "plain",
        }
    }

    pub(super) const fn encrypted(self) -> bool {
        matches!(
            self,
            Self::PlainEncrypted | Self::XdpEncrypted | Self::XdpEncryptedChacha
        )
    }

    /// The cipher the path's connections must show (`weave status
    /// connections`), when the path asks for one.
    pub(super) fn required_cipher(self) -> Option<&'static str> {
        (self == Self::XdpEncryptedChacha).then_some(CHACHA)
    }

    /// Why this `weave` binary cannot run the path, judged from the text of
    /// `weave launch --help`; `None` when it can (or seems to).
    pub(super) fn unsupported_by(self, launch_help: &str) -> Option<String> {
        let dataplanes = possible_values(launch_help, "--dataplane");
        if !dataplanes.iter().any(|v| v == self.dataplane()) {
            return Some(format!(
                "this weave's `launch --dataplane` does not accept `{}` (it accepts: {})",
                self.dataplane(),
                if dataplanes.is_empty() {
                    "nothing listed".to_string()
                } else {
                    dataplanes.join(", ")
                }
            ));
        }
        if self.encrypted() && !has_flag(launch_help, "--password") {
            return Some(
                "this weave's `launch` has no `--password` (encryption has not landed)".into(),
            );
        }
        if self == Self::XdpBusyPoll && !has_flag(launch_help, "--busy-poll") {
            return Some("this weave's `launch` has no `--busy-poll`".into());
        }
        if self.required_cipher().is_some() && !has_flag(launch_help, "--cipher") {
            return Some("this weave's `launch` has no `--cipher`".into());
        }
        None
    }
}

/// Whether clap's help text documents `flag`.
fn has_flag(help: &str, flag: &str) -> bool {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
        .any(|w| w == flag)
}

/// The `[possible values: a, b]` clap lists under `flag` in a help text.
fn possible_values(help: &str, flag: &str) -> Vec<String> {
    let Some(start) = help
        .lines()
        .position(|l| l.trim_start().split([' ', '=', ',']).any(|w| w == flag))
    else {
        return Vec::new();
    };
    // The option's block: its line and the indented lines after it, up to the next option.
    let block: Vec<&str> = help
        .lines()
        .skip(start)
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.trim_start().starts_with('-'))
        .map(|(_, l)| l)
        .collect();
    let block = block.join(" ");
    let Some((_, rest)) = block.split_once("[possible values:") else {
        return Vec::new();
    };
    rest.split(']')
        .next()
        .unwrap_or("")
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELP_TODAY: &str = "Usage: weave launch [OPTIONS] [PEERS]...

Options:
      --foreground
          Run in the foreground instead of as a background daemon
      --no-discovery
          Do not connect to peers learnt from other peers (only to targets)
      --dataplane <DATAPLANE>
          Data plane between hosts: `plain` (a capture socket and UDP), or `auto` (the best available; plain until the accelerated path lands)
          [default: auto]
          [possible values: auto, plain]
      --name <NAME>
          This peer's name (default: random, kept across restarts)
";

    #[test]
    fn reads_the_dataplanes_a_weave_binary_accepts() {
        assert_eq!(
            possible_values(HELP_TODAY, "--dataplane"),
            ["auto", "plain"]
        );
        assert_eq!(possible_values(HELP_TODAY, "--name"), Vec::<String>::new());
        assert!(has_flag(HELP_TODAY, "--no-discovery"));
        assert!(!has_flag(HELP_TODAY, "--password"));
    }

    #[test]
    fn says_why_a_path_cannot_run() {
        assert_eq!(Path::Plain.unsupported_by(HELP_TODAY), None);
        assert_eq!(Path::Vxlan.unsupported_by(HELP_TODAY), None);
        assert_eq!(
            Path::Xdp.unsupported_by(HELP_TODAY).unwrap(),
            "this weave's `launch --dataplane` does not accept `xdp` (it accepts: auto, plain)"
        );
        assert!(
            Path::PlainEncrypted
                .unsupported_by(HELP_TODAY)
                .unwrap()
                .contains("--password")
        );
        let later = HELP_TODAY
            .replace("auto, plain]", "auto, plain, xdp]")
            .replace(
                "--name <NAME>",
                "--password <PASSWORD>\n          Encrypt\n      --name <NAME>",
            );
        assert_eq!(Path::Xdp.unsupported_by(&later), None);
        assert_eq!(Path::XdpEncrypted.unsupported_by(&later), None);
        assert!(
            Path::XdpBusyPoll
                .unsupported_by(&later)
                .unwrap()
                .contains("--busy-poll")
        );
        assert!(
            Path::XdpEncryptedChacha
                .unsupported_by(&later)
                .unwrap()
                .contains("--cipher")
        );
    }

    #[test]
    fn flags_pin_the_dataplane() {
        assert_eq!(Path::Vxlan.launch_flags(), ["--dataplane", "plain"]);
        assert_eq!(
            Path::XdpEncrypted.launch_flags(),
            ["--dataplane", "xdp", "--password", PASSWORD]
        );
        assert_eq!(
            Path::XdpBusyPoll.launch_flags(),
            ["--dataplane", "xdp", "--busy-poll"]
        );
        assert_eq!(
            Path::XdpEncryptedChacha.launch_flags(),
            [
                "--dataplane",
                "xdp",
                "--password",
                PASSWORD,
                "--cipher",
                "chacha20-poly1305"
            ]
        );
        assert_eq!(Path::XdpEncrypted.required_cipher(), None);
    }
}
