//! Running commands in labelled, timed sections, with a hang guard: a
//! section that outlives its limit is killed (with its child processes) and
//! reported as failed, so CI never hangs on a stuck test.

use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a section may run before it is killed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit(Duration);

impl Limit {
    pub(crate) fn minutes(m: u64) -> Limit {
        Limit(Duration::from_secs(m * 60))
    }
}

/// `cargo`, as the one that runs this xtask (so `cargo +nightly xtask` is honoured).
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd` under a header and fails with the section's name if it fails.
pub(crate) fn section(name: &str, cmd: Command, limit: Limit) -> Result<()> {
    header(name, &cmd);
    let start = Instant::now();
    let status = run_with_limit(cmd, limit.0)?;
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!(
            "section `{name}` failed ({status}) after {:.1?}",
            start.elapsed()
        ),
        None => bail!(
            "section `{name}` did not finish within {:?} and was killed",
            limit.0
        ),
    }
}

pub(crate) fn header(name: &str, cmd: &Command) {
    let program = std::path::Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    let envs: String = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={} ", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    println!("\n::: {name} :::  {envs}{program} {}", args.join(" "));
}

/// `None` when the limit was reached and the process group was killed.
fn run_with_limit(mut cmd: Command, limit: Duration) -> Result<Option<ExitStatus>> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own process group, so that a kill reaches test binaries too.
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd.get_program().to_string_lossy()))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            kill_group(&mut child);
            let _ = child.wait();
            return Ok(None);
        }
        // Polling a child's exit status a few times a second costs nothing
        // next to the commands it waits for.
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-KILL", &format!("-{}", child.id())])
            .status();
    }
    let _ = child.kill();
}

/// Runs `cmd` quietly and returns its stdout, or `None` if it failed.
pub(crate) fn output(mut cmd: Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
