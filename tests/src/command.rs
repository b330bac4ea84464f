//! Running the system's tools (`ip`, `nsenter`, `docker`, `weave`, `tcpdump`):
//! to completion with a timeout, output captured for messages.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::CMD_TIMEOUT;

/// What a finished command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub cmd: String,
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Stdout when the command succeeded, an error that shows everything otherwise.
    pub fn ok(self) -> Result<String> {
        if self.success() {
            Ok(self.stdout)
        } else {
            Err(anyhow!("command failed:\n{self}"))
        }
    }

    /// Like [`Output::ok`], panicking (test style) instead of returning an error.
    #[track_caller]
    pub fn expect_ok(self) -> String {
        match self.ok() {
            Ok(stdout) => stdout,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self
            .code
            .map_or_else(|| "killed by a signal".to_string(), |c| c.to_string());
        writeln!(f, "$ {}  (exit {code})", self.cmd)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// An anonymous file (created, then unlinked) to capture a child's output.
/// Files rather than pipes: a daemon forked by the child (`weave launch`) may
/// keep the descriptors open long after the child itself has exited.
pub(crate) fn capture_file() -> Result<File> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(".wvt-out-{}-{n}", std::process::id()));
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    fs::remove_file(&path).ok();
    Ok(file)
}

pub(crate) fn read_back(mut file: File) -> String {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok();
    let mut bytes = Vec::new();
    #[expect(
        clippy::verbose_file_reads,
        reason = "the file is already unlinked: only this handle reaches it"
    )]
    file.read_to_end(&mut bytes).ok();
    text.push_str(&String::from_utf8_lossy(&bytes));
    text
}

/// Waits for `child`, killing it once `timeout` has passed.
pub(crate) fn wait_child(child: &mut Child, timeout: Duration, what: &str) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            bail!("`{what}` did not finish within {timeout:?} and was killed");
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Runs `cmd` to completion (stdin closed, output captured), killing it after `timeout`.
/// An error means it could not run at all; a non-zero exit is in the [`Output`].
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let line = describe(cmd);
    let (out, err) = (capture_file()?, capture_file()?);
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let status = wait_child(&mut child, timeout, &line)?;
    Ok(Output {
        cmd: line,
        code: status.code(),
        stdout: read_back(out),
        stderr: read_back(err),
    })
}

/// Runs `cmd` and returns its stdout; any failure is an error showing all output.
pub fn check(cmd: &mut Command) -> Result<String> {
    run(cmd, CMD_TIMEOUT)?.ok()
}

pub(crate) fn cmd<S: AsRef<OsStr>>(
    program: impl AsRef<OsStr>,
    args: impl IntoIterator<Item = S>,
) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}
