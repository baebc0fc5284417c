//! `switchyard rollout …` as an operator types it (the README's commands), against a control
//! API served by `switchyard serve`.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Output};

use switchyard_testkit::{Client, FakeProxy, Scratch, assert_eventually};

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

/// The README with its lines joined by spaces, as a paragraph reads.
fn readme_flat() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    readme.lines().collect::<Vec<_>>().join(" ")
}

/// What the README shows a command printing: the lines after `command` in its text block.
fn readme_example(command: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let example: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != command)
        .skip(1)
        .take_while(|l| *l != "```")
        .collect();
    assert!(!example.is_empty(), "the README shows no {command:?}");
    example.join("\n")
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

    // The README's example spec, its proxy moved to a port where nothing listens (a proxy
    // someone runs at the README's address must not change what this test sees) and shown at
    // the README's address again: refused, since no proxy can vouch for its route and tracks.
    let readme_proxy = "http://127.0.0.1:9901";
    let closed = format!(
        "http://{}",
        StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    );
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/examples/rollout-canary.yaml"
    ))
    .unwrap();
    assert!(spec.contains(readme_proxy), "{spec}");
    let file = scratch.join("rollout-canary.yaml");
    std::fs::write(&file, spec.replace(readme_proxy, &closed)).unwrap();
    let o = switchyard(&server, &["apply", "-f", file.to_str().unwrap()]);
    assert!(!o.status.success());
    let refused = text(&o).replace(&closed, readme_proxy);
    assert!(
        readme_flat().contains(&format!("(`{}`)", refused.trim())),
        "the README shows {refused}"
    );

    // A proxy that answers but takes no table (503): the rollout starts and waits to publish.
    let proxy = FakeProxy::start().await;
    proxy.refuse_writes(true);
    std::fs::write(&file, spec.replace(readme_proxy, &proxy.url)).unwrap();
    let shown = |o: &Output| text(o).replace(&proxy.url, readme_proxy);
    let o = switchyard(&server, &["apply", "-f", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", shown(&o));
    assert_eq!(shown(&o).lines().next(), Some("rollout checkout-v2 applied"));
    assert!(
        shown(&o).contains("Phase:    Progressing  (step 1 of 7)"),
        "{}",
        shown(&o)
    );

    let o = switchyard(&server, &["list"]);
    assert!(
        shown(&o).contains("checkout-v2") && shown(&o).contains("checkout"),
        "{}",
        shown(&o)
    );

    let o = switchyard(&server, &["status", "checkout-v2"]);
    let status = shown(&o);
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

    // Every command says what it did, then shows the state after it: the README's example,
    // once the control loop has tried the proxy.
    assert_eventually!(shown(&switchyard(&server, &["status", "checkout-v2"])).contains("NOT CONFIRMED"));
    let o = switchyard(&server, &["pause", "checkout-v2"]);
    assert!(o.status.success(), "{}", shown(&o));
    assert_eq!(
        shown(&o).trim_end(),
        readme_example("$ switchyard rollout pause checkout-v2")
    );
    let o = switchyard(&server, &["set-weight", "checkout-v2", "30"]);
    assert_eq!(
        shown(&o).lines().next(),
        Some("rollout checkout-v2: candidate weight set to 30%, held there")
    );
    assert!(
        shown(&o).contains("Weight:   ██████░░░░░░░░░░░░░░ 30%"),
        "{}",
        shown(&o)
    );
    let o = switchyard(&server, &["abort", "checkout-v2"]);
    assert!(
        shown(&o).contains("Phase:    Aborted") && shown(&o).contains("Abort:    aborted by an operator"),
        "{}",
        shown(&o)
    );

    // The API's refusal of an argument: its message and field, not its JSON.
    let o = switchyard(&server, &["set-weight", "checkout-v2", "150"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.trim(),
        "switchyard: weight: must be a number from 0 to 100 (the candidate's percent), not 150"
    );
    assert!(
        readme_flat().contains(&format!("(`{}`)", err.trim())),
        "the README shows {err}"
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
        assert!(shown(&o).contains(kind), "no {kind} in\n{}", shown(&o));
    }
    // A finished rollout can be deleted; then it is gone.
    let o = switchyard(&server, &["delete", "checkout-v2"]);
    assert!(o.status.success(), "{}", shown(&o));
    assert_eq!(shown(&o).trim(), "rollout checkout-v2 deleted");
    let o = switchyard(&server, &["status", "checkout-v2"]);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "switchyard: there is no rollout named \"checkout-v2\""
    );

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
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "switchyard: cannot reach the control API at {server}: connection refused; is `switchyard serve` running?"
        )
    );
    let readme_error = err.trim().replace(&server, "http://127.0.0.1:9900");
    assert!(
        readme_flat().contains(&format!("``{readme_error}``")),
        "the README shows {readme_error}"
    );
    let o = switchyard("127.0.0.1:9900", &["list"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "switchyard: cannot use \"127.0.0.1:9900\" as the control API's URL (--server or SWITCHYARD_SERVER): expected http://host[:port]/path or https://host[:port]/path"
    );
}

/// `switchyard rollout lint` with no server: what it prints and its exit code.
fn lint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["rollout", "lint"])
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("the CLI runs")
}

#[test]
fn lint_checks_specs_offline_as_the_readme_shows() {
    // Every example spec is valid, each on one line, exit 0.
    let examples: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("rollout-"))
        .map(|n| format!("config/examples/{n}"))
        .collect();
    assert!(examples.len() >= 5, "{examples:?}");
    let args: Vec<&str> = examples.iter().map(String::as_str).collect();
    let o = lint(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        examples.len(),
        "{}",
        text(&o)
    );

    // The README's two examples, as printed.
    for command in [
        "lint config/examples/rollout-canary.yaml --routes config/examples/canary-weight.yaml",
        "lint control/tests/data/bad-rollout.yaml",
    ] {
        let o = lint(&command.split(' ').skip(1).collect::<Vec<_>>());
        assert_eq!(o.status.success(), !command.contains("bad"), "{}", text(&o));
        let shown = readme_example(&format!("$ switchyard rollout {command}"));
        let shown: Vec<&str> = shown.lines().take_while(|l| !l.starts_with("$ ")).collect();
        assert_eq!(text(&o).trim_end(), shown.join("\n"), "README: {command}");
    }

    // A spec checked against a table that lacks its route; one of two specs of one name; a file
    // that is not there: each reported, the valid one still printed, exit 1.
    let o = lint(&[
        "config/examples/rollout-rings.yaml",
        "--routes",
        "config/examples/canary-weight.yaml",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("route: there is no route \"search\" (the routes are checkout) in the routes file"),
        "{}",
        text(&o)
    );
    let o = lint(&[
        "config/examples/rollout-canary.yaml",
        "config/examples/rollout-canary.yaml",
        "no-such-spec.yaml",
    ]);
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("config/examples/rollout-canary.yaml: valid"), "{out}");
    assert!(
        out.contains("name: rollout \"checkout-v2\" is also the name of the spec in"),
        "{out}"
    );
    assert!(out.contains("no-such-spec.yaml: cannot read"), "{out}");
    // A routes file that is neither a table nor a config is refused before any spec is read.
    let o = lint(&[
        "config/examples/rollout-canary.yaml",
        "--routes",
        "config/examples/rollout-canary.yaml",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("(the routes to check against)"), "{}", text(&o));
    assert!(o.stdout.is_empty(), "{}", text(&o));
}

#[test]
fn lint_flags_a_mirror_step_with_no_candidate_to_copy_to_and_one_that_would_replace_a_mirror() {
    let scratch = Scratch::new("lint-mirror");
    let routes = |tracks: &str, mirror: &str| {
        let file = scratch.join(&format!("routes-{}.yaml", tracks.len() + mirror.len()));
        std::fs::write(
            &file,
            format!("routes:\n  - name: checkout\n    tracks: [{tracks}]\n{mirror}"),
        )
        .unwrap();
        file.display().to_string()
    };
    let spec = scratch.join("rollout-shadow-match.yaml");
    std::fs::write(
        &spec,
        "name: shadow\nroute: checkout\nproxies: [\"http://127.0.0.1:9901\"]\nbaseline: stable\ncandidate: canary\n\
         canary: { steps: [{ setMirrorRoute: { percent: 10, match: [{ pathPrefix: /api }] } }, { setMirrorRoute: { percent: 0 } }] }\n",
    )
    .unwrap();
    let spec = spec.display().to_string();
    let stable = "{ name: stable, weight: 1, endpoints: [\"127.0.0.1:1\"] }";
    let canary = "{ name: canary, weight: 0, endpoints: [\"127.0.0.1:2\"] }";
    let debug = "{ name: debug, weight: 0, endpoints: [\"127.0.0.1:3\"] }";

    let o = lint(&[&spec, "--routes", &routes(&format!("{stable}, {canary}"), "")]);
    assert!(o.status.success(), "{}", text(&o));
    // No candidate track to copy to.
    let o = lint(&[&spec, "--routes", &routes(stable, "")]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(
            "candidate: route \"checkout\" has no track \"canary\" (its tracks are stable) in the routes file"
        ),
        "{}",
        text(&o)
    );
    // A mirror of the route to another track, which the step would replace.
    let o = lint(&[
        &spec,
        "--routes",
        &routes(
            &format!("{stable}, {canary}, {debug}"),
            "    mirror: { track: debug, percent: 5 }\n",
        ),
    ]);
    assert!(!o.status.success());
    let out = text(&o);
    assert!(
        out.contains("canary.steps[0].setMirrorRoute: route \"checkout\" already mirrors to track \"debug\"; this step would replace that mirror with one to \"canary\""),
        "{out}"
    );
    assert!(!out.contains("steps[1]"), "a step of percent 0 copies nothing: {out}");
}

/// A server over TLS, with a certificate for 127.0.0.1 from a fresh authority, answering every
/// request `[]`; its URL and the authority's certificate (PEM).
async fn https_listing() -> (String, String) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"[]"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (url, ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_spoken_to_peers_signed_by_a_trusted_authority_and_refused_otherwise() {
    let (url, ca) = https_listing().await;
    let scratch = Scratch::new("control-cli-https");
    let ca_file = scratch.join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let list = move |trust: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["rollout", "--server", &url, "list"])
            .env_remove("SSL_CERT_DIR");
        match trust {
            Some(file) => cmd.env("SSL_CERT_FILE", file),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
        cmd.output().expect("the CLI runs")
    };
    let o = tokio::task::spawn_blocking({
        let (list, ca_file) = (list.clone(), ca_file.clone());
        move || list(Some(&ca_file))
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("NAME"), "{}", text(&o));
    let o = tokio::task::spawn_blocking(move || list(None)).await.unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("its TLS certificate is not signed by an authority trusted here"),
        "{}",
        text(&o)
    );
}

/// The README's Dashboard lines, each without its comment.
fn readme_dashboard_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let lines: Vec<String> = readme
        .lines()
        .skip_while(|l| *l != "## Dashboard")
        .skip_while(|l| *l != "```sh")
        .skip(1)
        .take_while(|l| *l != "```")
        .map(|l| l.split(" #").next().unwrap_or(l).trim().to_owned())
        .collect();
    assert_eq!(lines.len(), 3, "the README's Dashboard commands: {lines:?}");
    lines
}

/// `switchyard ARGS` from a README line, run in `dir`, with `extra` after its first word.
fn readme_switchyard(line: &str, dir: &std::path::Path, extra: &[&str]) -> Command {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "switchyard", "{line}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command.current_dir(dir).arg(words[1]).args(extra).args(&words[2..]);
    command
}

/// The README's Dashboard commands: a token made with the shell, `serve --token-file`, and the
/// CLI's `--token-file`. A command without the token is refused in a sentence that says what
/// to send; `SWITCHYARD_TOKEN_FILE` works as the flag does; reads need none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_commands_from_the_command_line() {
    let scratch = Scratch::new("control-cli-token");
    let [make_token, serve, abort] = <[String; 3]>::try_from(readme_dashboard_commands()).unwrap();
    let made = Command::new("sh")
        .args(["-c", &make_token])
        .current_dir(scratch.path())
        .status()
        .unwrap();
    assert!(made.success(), "{make_token}");
    let token_file = scratch.join("switchyard.token");
    assert!(std::fs::read_to_string(&token_file).unwrap().trim().len() >= 32);
    let token = token_file.to_str().unwrap();

    let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let _serve = Serve(
        readme_switchyard(&serve, scratch.path(), &["--listen", &listen])
            .env("RUST_LOG", "error")
            .spawn()
            .unwrap(),
    );
    let server = format!("http://{listen}");
    assert_eventually!(
        Client::http1()
            .get(&format!("{server}/healthz"), &[])
            .await
            .is_ok_and(|r| r.status == 200)
    );
    assert!(
        scratch.join("switchyard-state").is_dir(),
        "{serve} keeps its state where it says"
    );
    let page = Client::http1().get(&format!("{server}/"), &[]).await.unwrap();
    assert_eq!((page.status.as_u16(), page.header("location")), (302, Some("ui/")));
    let proxy = FakeProxy::start().await;
    proxy.refuse_writes(true);
    let spec = scratch.join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: checkout-v2\nroute: checkout\nproxies: [\"{}\"]\nbaseline: stable\ncandidate: canary\ncanary: {{ steps: [{{ setWeight: 10 }}, {{ pause: {{}} }}] }}\n",
            proxy.url
        ),
    )
    .unwrap();
    let spec = spec.to_str().unwrap();

    let o = switchyard(&server, &["apply", "-f", spec]);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "switchyard: Authorization: this control API takes commands only with its bearer token: send Authorization: Bearer TOKEN (switchyard rollout --token-file FILE; the dashboard asks for it)"
    );
    let wrong = scratch.join("wrong");
    std::fs::write(&wrong, "tok-0ther").unwrap();
    let o = switchyard(&server, &["--token-file", wrong.to_str().unwrap(), "apply", "-f", spec]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("the bearer token is not this control API's"));
    let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["rollout", "--server", &server, "apply", "-f", spec])
        .env("SWITCHYARD_TOKEN_FILE", token)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = switchyard(&server, &["status", "checkout-v2"]);
    assert!(o.status.success(), "reads need no token: {}", text(&o));

    let o = readme_switchyard(&abort, scratch.path(), &["--server", &server])
        .output()
        .unwrap();
    assert!(o.status.success(), "{abort}: {}", text(&o));
    assert!(text(&o).contains("Phase:    Aborted"), "{}", text(&o));

    let empty = scratch.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let o = switchyard(&server, &["--token-file", empty.to_str().unwrap(), "list"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!(
            "switchyard: the token file {} is empty; put the bearer token in it",
            empty.display()
        )
    );
}
