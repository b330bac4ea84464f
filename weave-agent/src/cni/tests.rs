//! Every verb against a fake agent: what is asked of the agent, what is
//! printed, and which error code each failure gets.

use std::path::PathBuf;

use super::*;

/// Records requests; answers with `reply` (or the error `fail` makes).
struct Fake {
    seen: Vec<(PathBuf, String)>,
    fail: Option<fn() -> ClientError>,
}

impl Agent for Fake {
    fn call(&mut self, socket: &Path, request: &Request) -> Result<Reply, ClientError> {
        self.seen.push((socket.to_owned(), format!("{request:?}")));
        if let Some(fail) = self.fail {
            return Err(fail());
        }
        Ok(match request {
            Request::CniAdd { .. } => Reply::CniAttached {
                host_ifname: "vethweplc000001".into(),
                mac: "02:00:00:00:00:01".parse().unwrap(),
                mtu: 1410,
                cidrs: vec!["10.32.0.1/12".parse().unwrap()],
                routes: Vec::new(),
                dns: None,
            },
            Request::CniGc { .. } => Reply::CniCollected(Vec::new()),
            Request::Status => Reply::Message("ok".into()),
            _ => Reply::Done,
        })
    }
}

const CONF: &str =
    r#"{"cniVersion":"1.1.0","name":"weave","type":"weave-net","socket":"/tmp/x.sock"}"#;

fn invoke(verb: &str, stdin: &str, fail: Option<fn() -> ClientError>) -> (Outcome, Fake) {
    let mut fake = Fake {
        seen: Vec::new(),
        fail,
    };
    let vars = [
        ("CNI_COMMAND", verb),
        ("CNI_CONTAINERID", "pod1"),
        ("CNI_NETNS", "/var/run/netns/pod1"),
        ("CNI_IFNAME", "eth0"),
    ];
    let out = run(
        |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_string())
        },
        stdin.as_bytes(),
        &mut fake,
    );
    (out, fake)
}

fn code_of(out: &Outcome) -> u32 {
    match out {
        Outcome::Error { error, .. } => error.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn add_asks_the_agent_on_the_configured_socket_and_prints_the_result() {
    let (out, fake) = invoke("ADD", CONF, None);
    let Outcome::Result(r) = out else {
        panic!("{out:?}")
    };
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["ips"][0]["address"], "10.32.0.1/12");
    assert_eq!(fake.seen[0].0, PathBuf::from("/tmp/x.sock"));
    assert!(fake.seen[0].1.contains("CniAdd") && fake.seen[0].1.contains("pod1"));
}

#[test]
fn del_check_status_gc_print_nothing() {
    for verb in ["DEL", "CHECK", "STATUS"] {
        let (out, _) = invoke(verb, CONF, None);
        assert!(matches!(out, Outcome::Nothing), "{verb}: {out:?}");
    }
    let gc = r#"{"cniVersion":"1.1.0","name":"weave","type":"weave-net",
        "cni.dev/valid-attachments":[{"containerID":"pod1","ifname":"eth0"}]}"#;
    let (out, fake) = invoke("GC", gc, None);
    assert!(matches!(out, Outcome::Nothing), "{out:?}");
    assert!(fake.seen[0].1.contains("CniGc"));
    // Without the list GC would collect everything: refused.
    assert_eq!(code_of(&invoke("GC", CONF, None).0), code::INVALID_CONFIG);
}

#[test]
fn version_echoes_whatever_the_runtime_speaks() {
    let (out, fake) = invoke("VERSION", r#"{"cniVersion":"0.2.0"}"#, None);
    let Outcome::Result(r) = out else {
        panic!("{out:?}")
    };
    assert_eq!(r["cniVersion"], "0.2.0");
    assert!(fake.seen.is_empty());
    assert!(matches!(invoke("VERSION", "", None).0, Outcome::Result(_)));
    assert_eq!(code_of(&invoke("VERSION", "{", None).0), code::DECODE);
}

#[test]
fn verbs_newer_than_the_configuration_are_incompatible() {
    let old = r#"{"cniVersion":"0.3.1","name":"weave","type":"weave-net"}"#;
    let v100 = r#"{"cniVersion":"1.0.0","name":"weave","type":"weave-net"}"#;
    assert_eq!(
        code_of(&invoke("CHECK", old, None).0),
        code::INCOMPATIBLE_VERSION
    );
    assert_eq!(
        code_of(&invoke("STATUS", v100, None).0),
        code::INCOMPATIBLE_VERSION
    );
    assert_eq!(
        code_of(&invoke("GC", v100, None).0),
        code::INCOMPATIBLE_VERSION
    );
    assert!(matches!(invoke("ADD", old, None).0, Outcome::Result(_)));
}

#[test]
fn an_absent_agent_is_try_again_later_except_for_status() {
    let down = || ClientError::NotRunning {
        socket: "/tmp/x.sock".into(),
    };
    for verb in ["ADD", "DEL", "CHECK"] {
        assert_eq!(
            code_of(&invoke(verb, CONF, Some(down)).0),
            code::TRY_AGAIN_LATER,
            "{verb}"
        );
    }
    assert_eq!(
        code_of(&invoke("STATUS", CONF, Some(down)).0),
        code::NOT_AVAILABLE
    );
    let refused = || ClientError::Refused("container pod1 is attached already".into());
    let (out, _) = invoke("ADD", CONF, Some(refused));
    let Outcome::Error { cni_version, error } = out else {
        panic!("{out:?}")
    };
    assert_eq!(cni_version, "1.1.0");
    assert_eq!(error.code, code::AGENT_REFUSED);
    assert!(error.details.contains("attached already"));
}

#[test]
fn errors_are_in_the_callers_version_when_it_is_ours() {
    let (out, _) = invoke(
        "ADD",
        r#"{"cniVersion":"0.4.0","name":"-bad","type":"x"}"#,
        None,
    );
    let Outcome::Error { cni_version, error } = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        (cni_version.as_str(), error.code),
        ("0.4.0", code::INVALID_CONFIG)
    );
    let json: Value = serde_json::from_str(&error.to_json("0.4.0")).unwrap();
    assert_eq!(json["code"], 7);
    assert_eq!(json["cniVersion"], "0.4.0");
    assert!(json["msg"].is_string() && json["details"].is_string());
    let (out, _) = invoke(
        "ADD",
        r#"{"cniVersion":"0.2.0","name":"w","type":"x"}"#,
        None,
    );
    let Outcome::Error { cni_version, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(cni_version, LATEST);
}
