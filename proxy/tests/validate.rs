//! `switchyard-proxy validate`, run as a user runs it.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn validate(files: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-proxy"))
        .arg("validate")
        .args(files)
        .current_dir(root())
        .output()
        .expect("the binary runs");
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8(out.stderr).expect("utf-8"),
    )
}

#[test]
fn valid_files_print_a_summary_and_exit_0() {
    let (code, stdout, stderr) = validate(&["config/examples/canary-weight.yaml", "config/examples/blue-green.yaml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "config/examples/canary-weight.yaml: valid; listen 127.0.0.1:8080; admin 127.0.0.1:9901; 1 route"
        )
    );
    assert!(
        stdout.contains("    track stable      95.0000%  127.0.0.1:9001"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    rule 0: header x-canary = \"true\" -> canary"),
        "{stdout}"
    );
    assert!(stdout.contains("    sticky by header x-user-id"), "{stdout}");
    assert!(stdout.contains("  route storefront  host shop.example.com"), "{stdout}");
}

#[test]
fn the_readme_example_of_a_bad_file_prints_what_the_readme_shows() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let shown = readme
        .split("```text\n$ switchyard-proxy validate ")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README shows a validate run");
    let (file, expected) = shown.split_once('\n').expect("command line, then output");
    let (code, stdout, stderr) = validate(&[file]);
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert_eq!(stderr, expected);
}

#[test]
fn any_bad_file_makes_the_exit_code_1_and_the_good_ones_still_print() {
    let (code, stdout, stderr) = validate(&["config/examples/rings.yaml", "does/not/exist.yaml"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("config/examples/rings.yaml: valid"));
    assert!(stderr.starts_with("does/not/exist.yaml: cannot read:"), "{stderr}");
}
