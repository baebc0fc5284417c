//! The README's first command, run as a user runs it: the demo completes a healthy canary,
//! aborts a faulty one, prints the summary and exits 0.

use std::process::Command;

#[test]
fn the_demo_completes_one_rollout_aborts_the_other_and_exits_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-loadtest"))
        .arg("demo")
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("checkout-v2: Completed at 100"), "{stdout}");
    assert!(stdout.contains("checkout-v3: Aborted: "), "{stdout}");
    assert!(
        stdout.contains("first failing measurement to every proxy on baseline: "),
        "{stdout}"
    );
}
