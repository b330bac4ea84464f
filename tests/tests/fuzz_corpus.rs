//! The fuzz targets' inputs as regression tests, on stable Rust: every file
//! in `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through
//! the same check as the fuzz target (the library in `fuzz/src/`, included
//! below, is the one place those checks live: `src/<target>.rs` each). Also keeps the seed files in step with
//! the encoders, and the list of targets in step with `fuzz/`.
//!
//! A crash `cargo xtask fuzz` finds is copied to `fuzz/regressions/<target>/`
//! and fails here until the parser is fixed. After a wire format changes,
//! `WEAVE_UPDATE_SEEDS=1 cargo test -p weave-tests --test fuzz_corpus`
//! rewrites the seeds.

#[expect(
    unreachable_pub,
    reason = "the fuzz crate's library, included whole: its `pub` items serve fuzz_targets/, not this test"
)]
#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::collections::BTreeSet;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use harness::TARGETS;

const UPDATE_SEEDS: &str = "WEAVE_UPDATE_SEEDS";

fn fuzz_dir() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().expect("tests/ has a parent").join("fuzz")
}

/// The files of `dir` (none if it does not exist), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_and_regressions_pass_the_fuzz_checks() {
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for target in TARGETS {
        for kind in ["corpus", "regressions"] {
            let dir = fuzz_dir().join(kind).join(target.name);
            let inputs = files(&dir);
            counts.push(format!("{kind}/{}: {}", target.name, inputs.len()));
            for path in inputs {
                let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (target.check)(&data))) {
                    let message = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("(no message)");
                    failures.push(format!("{}: {message}", path.display()));
                }
            }
        }
    }
    println!("replayed {}", counts.join(", "));
    assert!(
        failures.is_empty(),
        "{} input(s) fail their fuzz target's check:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Seed files are `corpus/<target>/seed-<name>`, written from the encoders;
/// the fuzzer's own finds have other names and are left alone.
#[test]
fn seed_files_match_the_encoders() {
    let update = std::env::var_os(UPDATE_SEEDS).is_some();
    let mut stale = Vec::new();
    for target in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target.name);
        let seeds = (target.seeds)();
        let wanted: BTreeSet<PathBuf> = seeds
            .iter()
            .map(|(name, _)| dir.join(format!("seed-{name}")))
            .collect();
        assert_eq!(
            wanted.len(),
            seeds.len(),
            "{}: two seeds share a name",
            target.name
        );
        for (name, data) in &seeds {
            // Every seed passes its check before it is written.
            (target.check)(data);
            let path = dir.join(format!("seed-{name}"));
            if fs::read(&path).ok().as_ref() != Some(data) {
                stale.push(path.clone());
                if update {
                    fs::create_dir_all(&dir).unwrap();
                    fs::write(&path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
            }
        }
        for path in files(&dir) {
            let seed = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"));
            if seed && !wanted.contains(&path) {
                stale.push(path.clone());
                if update {
                    fs::remove_file(&path).unwrap();
                }
            }
        }
    }
    let list = || {
        stale
            .iter()
            .map(|p| format!("  {}", p.display()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if update {
        println!(
            "{UPDATE_SEEDS}: rewrote {} seed file(s)\n{}",
            stale.len(),
            list()
        );
    } else {
        assert!(
            stale.is_empty(),
            "seed files differ from what the encoders write now (a wire format changed?):\n{}\n\
             rewrite them with: {UPDATE_SEEDS}=1 cargo test -p weave-tests --test fuzz_corpus",
            list()
        );
    }
}

/// Each target in the harness has its file in `fuzz_targets/` and its
/// `[[bin]]` in `fuzz/Cargo.toml`, and nothing else is there.
#[test]
fn every_target_is_declared_once() {
    let in_harness: BTreeSet<&str> = TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(
        in_harness.len(),
        TARGETS.len(),
        "a target name is used twice"
    );
    let files: BTreeSet<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_str()?.strip_suffix(".rs")?.to_owned()))
        .collect();
    assert_eq!(
        files.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        in_harness,
        "fuzz/fuzz_targets/*.rs and harness::TARGETS differ"
    );
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &in_harness {
        let bin = format!("[[bin]]\nname = \"{name}\"\npath = \"fuzz_targets/{name}.rs\"");
        assert!(
            manifest.contains(&bin),
            "fuzz/Cargo.toml lacks the [[bin]] for {name}"
        );
    }
    assert_eq!(manifest.matches("[[bin]]").count(), in_harness.len());
}
