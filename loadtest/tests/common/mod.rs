//! Runs the switchyard-loadtest binary as a user does.

use std::ffi::OsStr;
use std::process::Command;

/// Runs `switchyard-loadtest ARGS` and returns what it printed, failing the test with its exit
/// status and both outputs unless it exited 0.
pub fn loadtest_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-loadtest"))
        .args(args)
        .output()
        .expect("switchyard-loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
