//! The offline validation of `deploy/` (a plain `#[test]`, as rust-analyzer's
//! tidy checks are): no cluster can run here, so kubectl parses the
//! manifests client-side (`kubectl label --local`, which needs no API
//! server, unlike `create`/`apply --dry-run=client`, which ask it for the
//! resource mapping), and the test checks what the agent depends on.

use std::process::Command;

use serde_json::Value;

use crate::image::IMAGE;
use crate::util::{find, workspace_root};

/// Every object in `deploy/`, as kubectl parsed them.
fn objects() -> Vec<Value> {
    let kubectl = find("kubectl")
        .expect("kubectl not found: install Debian's kubernetes-client (`cargo xtask setup` does)");
    let out = Command::new(kubectl)
        .current_dir(workspace_root())
        .args([
            "label",
            "--local",
            "-f",
            "deploy/",
            "-o",
            "json",
            "checked=offline",
        ])
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl could not parse deploy/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON document per object (or, from some versions, one List).
    let mut objects = Vec::new();
    for parsed in serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>() {
        let parsed = parsed.expect("kubectl printed JSON");
        match parsed["kind"].as_str() {
            Some("List") => objects.extend(parsed["items"].as_array().cloned().unwrap_or_default()),
            _ => objects.push(parsed),
        }
    }
    objects
}

fn find_object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/ has no {kind} {name}"))
}

#[test]
fn deploy_manifests_parse_and_hold_what_the_agent_needs() {
    let objects = objects();
    let mut kinds: Vec<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default().to_owned(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    kinds.sort();
    let expected = [
        ("ClusterRole", "weave-net"),
        ("ClusterRoleBinding", "weave-net"),
        ("DaemonSet", "weave-net"),
        ("ServiceAccount", "weave-net"),
    ]
    .map(|(k, n)| (k.to_owned(), n.to_owned()));
    assert_eq!(kinds, expected);

    // RBAC: the binding gives the DaemonSet's account the role that lists nodes.
    let role = find_object(&objects, "ClusterRole", "weave-net");
    let rule = role["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["resources"][0] == "nodes"))
        .expect("a rule for nodes");
    for verb in ["get", "list"] {
        assert!(
            rule["verbs"].as_array().unwrap().iter().any(|v| v == verb),
            "nodes: {verb}"
        );
    }
    let binding = find_object(&objects, "ClusterRoleBinding", "weave-net");
    assert_eq!(binding["roleRef"]["name"], "weave-net");
    assert_eq!(binding["subjects"][0]["name"], "weave-net");
    assert_eq!(binding["subjects"][0]["namespace"], "kube-system");

    let ds = find_object(&objects, "DaemonSet", "weave-net");
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["metadata"]["namespace"], "kube-system");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "weave-net");
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"],
        "the selector matches the pod template"
    );

    // Both containers run the image `cargo xtask image` builds.
    let init = &pod["initContainers"][0];
    let agent = &pod["containers"][0];
    for c in [init, agent] {
        assert_eq!(c["image"], IMAGE, "{}", c["name"]);
    }
    let args = |c: &Value| -> Vec<String> {
        c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(args(init)[0], "setup-cni");
    assert_eq!(
        args(agent),
        ["launch", "--foreground", "--peers-from-kubernetes"]
    );
    assert_eq!(agent["securityContext"]["privileged"], true);

    // Volumes: each mount names a hostPath volume at the expected node path.
    let host_path = |mount: &Value| -> String {
        let name = &mount["name"];
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| &v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        volume["hostPath"]["path"].as_str().unwrap().to_owned()
    };
    let mounts = |c: &Value| -> Vec<(String, String)> {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["mountPath"].as_str().unwrap().to_owned(), host_path(m)))
            .collect()
    };
    let init_mounts = mounts(init);
    for (flag, host) in [
        ("--bin-dir", "/opt/cni/bin"),
        ("--conf-dir", "/etc/cni/net.d"),
    ] {
        let target = args(init)
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{flag}=")).map(str::to_owned))
            .unwrap_or_else(|| panic!("setup-cni {flag}"));
        assert!(
            init_mounts.contains(&(target.clone(), host.to_owned())),
            "setup-cni writes {target}, which must be the node's {host}: {init_mounts:?}"
        );
    }
    let agent_mounts = mounts(agent);
    for path in [
        "/run/weave",
        "/var/lib/weave",
        "/sys/fs/bpf",
        "/var/run/netns",
    ] {
        assert!(
            agent_mounts.contains(&(path.to_owned(), path.to_owned())),
            "the agent needs the node's {path} at the same path: {agent_mounts:?}"
        );
    }
}
