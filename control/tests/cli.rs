//! `switchyard rollout …` as an operator types it (the README's commands), against a control
//! API served by `switchyard serve`.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Output};

use switchyard_testkit::{Client, Scratch, assert_eventually};

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn switchyard(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["rollout", "--server", server])
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("the CLI runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_verbs_work_from_the_command_line() {
    let scratch = Scratch::new("control-cli");
    let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = scratch.join("serve.log");
    let _serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--state"])
            .arg(scratch.join("state"))
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let server = format!("http://127.0.0.1:{port}");
    assert_eventually!(
        Client::http1()
            .get(&format!("{server}/healthz"), &[])
            .await
            .is_ok_and(|r| r.status == 200)
    );

    // The README's example spec; its proxy is not running, so it starts and waits to publish.
    let o = switchyard(&server, &["apply", "-f", "config/examples/rollout-canary.yaml"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).lines().next(), Some("rollout checkout-v2 applied"));
    assert!(
        text(&o).contains("Phase:    Progressing  (step 1 of 7)"),
        "{}",
        text(&o)
    );

    let o = switchyard(&server, &["list"]);
    assert!(
        text(&o).contains("checkout-v2") && text(&o).contains("checkout"),
        "{}",
        text(&o)
    );

    let o = switchyard(&server, &["status", "checkout-v2"]);
    let status = text(&o);
    for line in [
        "Name:     checkout-v2",
        "Route:    checkout",
        "Phase:    Progressing",
        "Proxy:    http://127.0.0.1:9901",
    ] {
        assert!(status.contains(line), "missing {line:?} in\n{status}");
    }
    assert!(
        status.contains("NOT CONFIRMED") || status.contains("Message:"),
        "{status}"
    );

    // Every command says what it did, then shows the state after it.
    let o = switchyard(&server, &["pause", "checkout-v2"]);
    assert_eq!(text(&o).lines().next(), Some("rollout checkout-v2 paused"));
    assert!(text(&o).contains("Phase:    Paused  (step 1 of 7)"), "{}", text(&o));
    let o = switchyard(&server, &["set-weight", "checkout-v2", "30"]);
    assert_eq!(
        text(&o).lines().next(),
        Some("rollout checkout-v2: candidate weight set to 30%, held there")
    );
    assert!(text(&o).contains("Weight:   ██████░░░░░░░░░░░░░░ 30%"), "{}", text(&o));
    let o = switchyard(&server, &["abort", "checkout-v2"]);
    assert!(
        text(&o).contains("Phase:    Aborted") && text(&o).contains("Abort:    aborted by an operator"),
        "{}",
        text(&o)
    );

    // The API's refusal of an argument: its message and field, not its JSON.
    let o = switchyard(&server, &["set-weight", "checkout-v2", "150"]);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "switchyard: weight: must be a number from 0 to 100 (the candidate's percent), not 150"
    );

    // Refusals are one line on stderr and a failing exit code.
    let o = switchyard(&server, &["promote", "checkout-v2"]);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "switchyard: cannot promote: the rollout is Aborted"
    );

    let o = switchyard(&server, &["history", "checkout-v2"]);
    for kind in ["apply", "pause", "weight", "abort"] {
        assert!(text(&o).contains(kind), "no {kind} in\n{}", text(&o));
    }
    // A spec with mistakes: every problem by path, exit code 1.
    std::fs::write(
        scratch.join("bad.yaml"),
        "name: x\nroute: r\nproxies: []\nbaseline: a\ncandidate: a\ncanary: { steps: [] }\n",
    )
    .unwrap();
    let o = switchyard(&server, &["apply", "-f", scratch.join("bad.yaml").to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("proxies") && err.contains("candidate") && err.contains("canary.steps"),
        "{err}"
    );
    assert!(!err.contains("{\""), "JSON in\n{err}");

    // Its logs went to a file: words, no colour codes.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("switchyard control loop serving"), "{logged}");
    assert!(!logged.contains('\x1b'), "colour codes in a log file:\n{logged}");
}

#[test]
fn an_unreachable_control_api_is_one_sentence_with_the_fix() {
    let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = format!("http://127.0.0.1:{port}");
    let o = switchyard(&server, &["list"]);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!(
            "switchyard: cannot reach the control API at {server}: connection refused; is `switchyard serve` running?"
        )
    );
    let o = switchyard("127.0.0.1:9900", &["list"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "switchyard: cannot use \"127.0.0.1:9900\" as the control API's URL (--server or SWITCHYARD_SERVER): expected http://host[:port]/path"
    );
}
