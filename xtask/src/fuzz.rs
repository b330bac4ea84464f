//! `cargo xtask fuzz`: every fuzz target in `fuzz/` for a bounded time.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::util::{self, header, run_loud};

/// Run the fuzz targets (`fuzz/fuzz_targets/`) with cargo fuzz, for a bounded time each.
///
/// Needs rustup's nightly toolchain (without it, the default toolchain with
/// `RUSTC_BOOTSTRAP=1`) and cargo-fuzz, which is installed if missing
/// (`cargo install cargo-fuzz --locked`). Each target starts from fuzz/corpus/<target>/
/// and fuzz/regressions/<target>/; what it finds is kept in fuzz/work/ (not committed;
/// see --merge). A crash ends that target: its input is copied to
/// fuzz/regressions/<target>/, where `cargo xtask test` replays it until it is fixed,
/// and the task fails after the summary.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Afterwards, add the inputs that reached new code to fuzz/corpus/<target>/ (to commit).
    #[arg(long)]
    merge: bool,
    /// How many targets fuzz side by side (each libFuzzer process uses one core).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Targets to run (default: all).
    targets: Vec<String>,
}

/// What one target's run came to, read from libFuzzer's output.
#[derive(Default)]
struct Report {
    target: String,
    crashed: bool,
    runs: Option<u64>,
    execs_per_sec: Option<u64>,
    coverage: Option<u64>,
    corpus: Option<u64>,
    peak_rss_mb: Option<u64>,
    /// The crash input, copied to fuzz/regressions/.
    regression: Option<PathBuf>,
    log: PathBuf,
}

pub(crate) fn run(args: Args) -> Result<()> {
    let fuzz_dir = util::workspace_root().join("fuzz");
    let all = targets(&fuzz_dir)?;
    let targets = if args.targets.is_empty() {
        all
    } else {
        if let Some(unknown) = args.targets.iter().find(|t| !all.contains(t)) {
            bail!(
                "no fuzz target {unknown:?}; the targets are: {}",
                all.join(", ")
            );
        }
        args.targets
    };

    header("fuzz: toolchain and cargo-fuzz");
    let toolchain = Toolchain::detect();
    println!("    {}", toolchain.describe());
    if toolchain
        .cargo_fuzz()
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("    cargo-fuzz is installed");
    } else {
        run_loud(util::cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }

    header("fuzz: build (release, debug assertions, AddressSanitizer)");
    let started = Instant::now();
    run_loud(&mut cargo_fuzz(&toolchain, &fuzz_dir, "build"))?;
    println!("    built in {:.0} s", started.elapsed().as_secs_f64());

    let work = fuzz_dir.join("work");
    header(&format!(
        "fuzz: {} targets for {} s each, {} side by side",
        targets.len(),
        args.seconds,
        args.jobs
    ));
    let reports = util::in_parallel(targets, args.jobs, |target| {
        fuzz_one(&toolchain, &fuzz_dir, &work, &target, args.seconds)
    });
    let reports: Vec<Report> = reports.into_iter().collect::<Result<_>>()?;
    if args.merge {
        for report in reports.iter().filter(|r| !r.crashed) {
            header(&format!(
                "fuzz: merging new inputs into fuzz/corpus/{}",
                report.target
            ));
            merge(&toolchain, &fuzz_dir, &work, &report.target)?;
        }
    }

    header("fuzz: summary");
    print_summary(&reports);
    let failed: Vec<&Report> = reports.iter().filter(|r| r.crashed).collect();
    if failed.is_empty() {
        return Ok(());
    }
    for r in &failed {
        println!("\n{}: see {}", r.target, r.log.display());
        if let Some(input) = &r.regression {
            println!(
                "    input: {}\n    replay: cargo +nightly fuzz run --fuzz-dir fuzz {} {}\n    \
                 or (stable): cargo test -p weave-tests --test fuzz_corpus",
                input.display(),
                r.target,
                input.display()
            );
        }
    }
    bail!(
        "{} fuzz target(s) failed: {}",
        failed.len(),
        failed
            .iter()
            .map(|r| r.target.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The targets: the files in `fuzz/fuzz_targets/`, sorted.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".rs")?.to_owned())
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The compiler cargo fuzz builds with: its flags (`-Z sanitizer`) are nightly-only.
enum Toolchain {
    /// rustup's `nightly`.
    Nightly,
    /// No nightly: the default toolchain, allowed unstable flags.
    Bootstrap,
}

impl Toolchain {
    fn detect() -> Self {
        // Ask only about installed toolchains: `+nightly` might try to install one.
        let installed = Command::new("rustup")
            .args(["toolchain", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if installed.lines().any(|l| l.starts_with("nightly")) {
            Self::Nightly
        } else {
            Self::Bootstrap
        }
    }

    const fn describe(&self) -> &'static str {
        match self {
            Self::Nightly => "toolchain: rustup's nightly",
            Self::Bootstrap => {
                "toolchain: no rustup nightly; the default toolchain with RUSTC_BOOTSTRAP=1"
            }
        }
    }

    /// `cargo fuzz` in the workspace root, building in fuzz/target.
    fn cargo_fuzz(&self) -> Command {
        // The rustup proxy (not $CARGO, the toolchain's own cargo): it understands `+nightly`.
        let mut cargo = Command::new("cargo");
        cargo
            .current_dir(util::workspace_root())
            .env("PATH", util::path_with_cargo_bin())
            // What `cargo xtask` was run with must not pick cargo fuzz's toolchain or target dir.
            .env_remove("CARGO")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR");
        match self {
            Self::Nightly => {
                cargo.arg("+nightly");
            }
            Self::Bootstrap => {
                cargo.env("RUSTC_BOOTSTRAP", "1");
            }
        }
        cargo.arg("fuzz");
        cargo
    }
}

/// `cargo fuzz <sub> --fuzz-dir fuzz`.
fn cargo_fuzz(toolchain: &Toolchain, fuzz_dir: &Path, sub: &str) -> Command {
    let mut cargo = toolchain.cargo_fuzz();
    cargo.arg(sub).arg("--fuzz-dir").arg(fuzz_dir);
    cargo
}

/// Fuzzes `target` for `seconds`, its log in fuzz/work/logs/; a crash input
/// is copied to fuzz/regressions/<target>/.
fn fuzz_one(
    toolchain: &Toolchain,
    fuzz_dir: &Path,
    work: &Path,
    target: &str,
    seconds: u64,
) -> Result<Report> {
    let found = work.join("corpus").join(target);
    let logs = work.join("logs");
    for dir in [&found, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log = logs.join(format!("{target}.log"));
    let mut cargo = cargo_fuzz(toolchain, fuzz_dir, "run");
    // New inputs go to the first directory; the committed ones are only read.
    cargo
        .arg(target)
        .arg(&found)
        .arg(fuzz_dir.join("corpus").join(target));
    let regressions = fuzz_dir.join("regressions").join(target);
    if regressions.is_dir() {
        cargo.arg(&regressions);
    }
    cargo.args([
        "--",
        &format!("-max_total_time={seconds}"),
        // A slow input is a bug too (a hang on the wire).
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]);
    // Targets run side by side: what this one says is printed in one piece at its end.
    let mut said = format!(
        "==> fuzz: {target}\n$ {}\n    log: {}\n",
        util::describe(&cargo),
        log.display()
    );
    let file =
        fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let status = cargo
        .stdout(file.try_clone()?)
        .stderr(file)
        .stdin(Stdio::null())
        .status()
        .context("cannot start cargo fuzz")?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    let mut report = parse_log(target, &text);
    report.log = log;
    report.crashed = !status.success();
    if report.crashed {
        // The panic or sanitizer report, and where libFuzzer put the input.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("panicked at") {
                // The panic's message is the next line.
                let message = lines.get(i + 1).unwrap_or(&"");
                let _ = writeln!(said, "    {line}\n    {message}");
            } else if line.starts_with("SUMMARY:") || line.contains("ERROR: libFuzzer") {
                let _ = writeln!(said, "    {line}");
            }
        }
        if let Some(artifact) = artifact(&text) {
            let dest_dir = fuzz_dir.join("regressions").join(target);
            fs::create_dir_all(&dest_dir)?;
            let dest = dest_dir.join(artifact.file_name().context("artifact without a name")?);
            fs::copy(&artifact, &dest).with_context(|| {
                format!("cannot copy {} to {}", artifact.display(), dest.display())
            })?;
            let _ = writeln!(said, "    crash input copied to {}", dest.display());
            report.regression = Some(dest);
        }
    } else {
        let _ = writeln!(
            said,
            "    ok: {} runs, {} execs/s",
            show(report.runs),
            show(report.execs_per_sec)
        );
    }
    print!("{said}");
    Ok(report)
}

/// Adds the inputs of fuzz/work/corpus/<target> that reach new code to fuzz/corpus/<target>.
fn merge(toolchain: &Toolchain, fuzz_dir: &Path, work: &Path, target: &str) -> Result<()> {
    let mut cargo = cargo_fuzz(toolchain, fuzz_dir, "run");
    cargo
        .arg(target)
        .arg(fuzz_dir.join("corpus").join(target))
        .arg(work.join("corpus").join(target))
        .args(["--", "-set_cover_merge=1"]);
    run_loud(&mut cargo)
}

/// The numbers libFuzzer prints at the end (`-print_final_stats=1`) and on
/// its last status line (`#N DONE cov: X ft: Y corp: Z/...`).
fn parse_log(target: &str, text: &str) -> Report {
    let stat = |name: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .next_back()
    };
    let status_line = text
        .lines()
        .rfind(|l| l.starts_with('#') && l.contains(" cov: "));
    let field = |name: &str| -> Option<u64> {
        let after = status_line?.split(name).nth(1)?;
        let digits: String = after
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    Report {
        target: target.to_owned(),
        runs: stat("stat::number_of_executed_units:"),
        execs_per_sec: stat("stat::average_exec_per_sec:"),
        peak_rss_mb: stat("stat::peak_rss_mb:"),
        coverage: field("cov:"),
        corpus: field("corp:"),
        ..Report::default()
    }
}

/// Where libFuzzer wrote the crashing input (`... Test unit written to PATH`).
fn artifact(text: &str) -> Option<PathBuf> {
    let line = text
        .lines()
        .rfind(|l| l.contains("Test unit written to "))?;
    let path = line.split("Test unit written to ").nth(1)?.trim();
    Some(util::workspace_root().join(path))
}

fn show(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn print_summary(reports: &[Report]) {
    println!(
        "{:<20} {:<7} {:>12} {:>9} {:>6} {:>7} {:>7}",
        "target", "result", "runs", "execs/s", "cov", "corpus", "rss MB"
    );
    for r in reports {
        println!(
            "{:<20} {:<7} {:>12} {:>9} {:>6} {:>7} {:>7}",
            r.target,
            if r.crashed { "FAILED" } else { "ok" },
            show(r.runs),
            show(r.execs_per_sec),
            show(r.coverage),
            show(r.corpus),
            show(r.peak_rss_mb),
        );
    }
}
