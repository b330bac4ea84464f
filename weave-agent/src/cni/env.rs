//! The `CNI_*` environment: which verb, and which attachment it is about.

use std::path::PathBuf;

use super::error::{CniError, code};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

/// What the runtime said in the environment, checked for the verb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub verb: Verb,
    /// Set for ADD, DEL and CHECK.
    pub container_id: String,
    /// Set for ADD and CHECK; DEL may give it.
    pub netns: Option<PathBuf>,
    /// Set for ADD, DEL and CHECK.
    pub ifname: String,
}

/// The longest interface name Linux allows (`IFNAMSIZ` less the NUL).
const MAX_IFNAME: usize = 15;

impl Env {
    /// Reads the environment through `var`; a missing or malformed variable
    /// is code 4, naming it.
    pub fn parse(var: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let invalid =
            |details: String| CniError::new(code::INVALID_ENV, "invalid environment", details);
        let verb = match var("CNI_COMMAND").as_deref() {
            Some("ADD") => Verb::Add,
            Some("DEL") => Verb::Del,
            Some("CHECK") => Verb::Check,
            Some("STATUS") => Verb::Status,
            Some("GC") => Verb::Gc,
            Some("VERSION") => Verb::Version,
            Some(other) => {
                return Err(invalid(format!(
                    "CNI_COMMAND={other:?}: expected ADD, DEL, CHECK, STATUS, GC or VERSION"
                )));
            }
            None => return Err(invalid("CNI_COMMAND is not set".into())),
        };
        let per_attachment = matches!(verb, Verb::Add | Verb::Del | Verb::Check);
        let mut missing = Vec::new();
        let mut required = |name: &'static str| {
            let value = var(name).filter(|v| !v.is_empty());
            if value.is_none() && per_attachment {
                missing.push(name);
            }
            value.unwrap_or_default()
        };
        let container_id = required("CNI_CONTAINERID");
        let ifname = required("CNI_IFNAME");
        let netns = if matches!(verb, Verb::Del) {
            var("CNI_NETNS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        } else {
            let netns = required("CNI_NETNS");
            (!netns.is_empty()).then(|| PathBuf::from(netns))
        };
        if !missing.is_empty() {
            return Err(invalid(format!("{} must be set", missing.join(", "))));
        }
        if per_attachment {
            if !valid_container_id(&container_id) {
                return Err(invalid(format!(
                    "CNI_CONTAINERID={container_id:?}: letters, digits, '_', '.' and '-', \
                     starting with a letter or digit"
                )));
            }
            if !valid_ifname(&ifname) {
                return Err(invalid(format!(
                    "CNI_IFNAME={ifname:?}: at most {MAX_IFNAME} bytes, no '/', ':' or space, not '.' or '..'"
                )));
            }
        }
        Ok(Self {
            verb,
            container_id,
            netns,
            ifname,
        })
    }
}

/// The spec's rule for container IDs.
fn valid_container_id(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// What Linux accepts as an interface name.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        Env::parse(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_string())
        })
    }

    #[test]
    fn add_needs_the_attachment_and_names_what_is_missing() {
        let env = parse(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "pod-1"),
            ("CNI_NETNS", "/var/run/netns/p"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(env.verb, Verb::Add);
        assert_eq!(env.netns.as_deref(), Some("/var/run/netns/p".as_ref()));
        let err = parse(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        assert!(err.details.contains("CNI_CONTAINERID") && err.details.contains("CNI_NETNS"));
        assert!(!err.details.contains("CNI_IFNAME"));
    }

    #[test]
    fn del_may_lack_the_namespace_and_status_needs_nothing() {
        let env = parse(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "pod-1"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(env.netns, None);
        for verb in ["STATUS", "GC", "VERSION"] {
            assert!(parse(&[("CNI_COMMAND", verb)]).is_ok(), "{verb}");
        }
    }

    #[test]
    fn bad_commands_ids_and_names_are_code_4() {
        for vars in [
            vec![],
            vec![("CNI_COMMAND", "ATTACH")],
            vec![
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "-x"),
                ("CNI_IFNAME", "eth0"),
            ],
            vec![
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "a-very-long-interface"),
            ],
            vec![
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "eth/0"),
            ],
        ] {
            assert_eq!(
                parse(&vars).unwrap_err().code,
                code::INVALID_ENV,
                "{vars:?}"
            );
        }
    }
}
