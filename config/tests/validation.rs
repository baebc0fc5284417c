//! Loading whole configurations: defaults, every problem named by path, JSON and YAML alike,
//! and what is served back reads in again unchanged.

use std::time::Duration;

use switchyard_config::schema::{
    AccessLogPath, AddressFamily, DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, DEFAULT_TRACK_HEADER, DnsSpec, Limits,
    RequestIdMode, RequestIdSpec, StateFileSpec, Timeouts,
};
use switchyard_config::{Format, load_config, load_routes};

fn problems(text: &str, format: Format) -> Vec<String> {
    match load_config(text, format, 1) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

const MINIMAL: &str = "routes: [{ name: app, tracks: [{ name: stable, endpoints: ['127.0.0.1:9001'], weight: 1 }] }]";

#[test]
fn a_minimal_file_gets_every_default() {
    let c = load_config(MINIMAL, Format::Yaml, 1).unwrap().config;
    assert_eq!(c.listen.len(), 1);
    assert_eq!(c.listen[0].address, DEFAULT_LISTEN);
    assert_eq!(c.admin.listen, DEFAULT_ADMIN_LISTEN);
    assert_eq!(c.admin.state_file, StateFileSpec::BesideConfig);
    assert_eq!(c.track_header.as_deref(), Some(DEFAULT_TRACK_HEADER));
    assert_eq!(c.timeouts, Timeouts::default());
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.timeouts.request, Duration::from_secs(15));
    assert_eq!(c.dns, DnsSpec::default());
    assert_eq!(c.dns.refresh, Duration::from_secs(5));
    assert_eq!(c.dns.family, AddressFamily::V4Preferred);
}

#[test]
fn dns_settings_are_read_checked_and_served_back() {
    let config = |settings: &str| load_config(&format!("{settings}\n{MINIMAL}"), Format::Yaml, 1);
    let c = config("dns: { refresh: 30s, family: all }").unwrap().config;
    assert_eq!(c.dns.refresh, Duration::from_secs(30));
    assert_eq!(c.dns.timeout, DnsSpec::default().timeout);
    assert_eq!(c.dns.family, AddressFamily::All);
    for family in ["v4", "v6", "v4Preferred"] {
        assert!(config(&format!("dns: {{ family: {family} }}")).is_ok(), "{family}");
    }
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(load_config(&json, Format::Json, 1).unwrap().config, c, "{json}");

    let got = problems(
        &format!("dns: {{ refresh: 10ms, timeout: 0s, family: ipv4, every: 1s }}\n{MINIMAL}"),
        Format::Yaml,
    );
    let want = [
        "dns.refresh: refresh must be at least 100ms",
        "dns.timeout: timeout must be longer than 0s",
        "dns.family: expected v4Preferred, all, v4 or v6, found \"ipv4\"",
        "dns.every: unknown field `every`",
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for w in want {
        assert!(got.iter().any(|g| g.starts_with(w)), "missing {w:?} in {got:#?}");
    }
    assert_eq!(
        problems(&format!("dns: {{ refresh: soon }}\n{MINIMAL}"), Format::Yaml),
        ["dns.refresh: invalid duration \"soon\" (expected number at 0); write e.g. 500ms, 5s, 2m"]
    );
}

#[test]
fn settings_override_defaults_and_the_track_header_can_be_turned_off() {
    let text = r#"
listen:
  - 127.0.0.1:8080
  - { address: "127.0.0.1:8443", tls: { certFile: cert.pem, keyFile: key.pem } }
admin: { listen: 127.0.0.1:9999, tokenFile: /run/token }
trackHeader: false
timeouts: { connect: 250ms, drain: 1m }
limits: { maxHeaders: 50, requestBodyMinRate: 0 }
routes: []
"#;
    let c = load_config(text, Format::Yaml, 1).unwrap().config;
    assert_eq!(c.listen[1].tls.as_ref().unwrap().key_file, "key.pem");
    assert_eq!(c.admin.token_file.as_deref(), Some("/run/token"));
    assert_eq!(c.track_header, None);
    assert_eq!(c.timeouts.connect, Duration::from_millis(250));
    assert_eq!(c.timeouts.drain, Duration::from_secs(60));
    assert_eq!(c.timeouts.idle, Timeouts::default().idle);
    assert_eq!(c.limits.max_headers, 50);
    assert_eq!(c.limits.request_body_min_rate, 0, "0 turns the rate check off");
    assert_eq!(c.timeouts.request_body_grace, Timeouts::default().request_body_grace);
    assert_eq!(c.limits.max_connections, Limits::default().max_connections);
}

#[test]
fn typos_and_wrong_types_are_named_with_the_rest() {
    let text = r#"
listen: nonsense
admin: { listen: 127.0.0.1:9901, tokenfile: x }
timeouts: { connect: soon, request: 0s, requestBodyGrace: 0s }
limits: { maxHeaders: -1, requestBodyMinRate: slow }
trackHeader: 7
routes:
  - name: checkout
    tracks:
      - { name: stable, endpoints: ["127.0.0.1:9001"], weight: heavy }
      - { name: canary, endpoints: ["127.0.0.1:9002"], weight: 5, protocol: h3 }
  - name: 42
    tracks: { name: x }
  - name: search
    tracks: [{ name: stable, endpoints: ["127.0.0.1:9003"], weight: 1 }]
    rules: [{ match: { headers: [{ name: x-canary, value: "true" }] }, track: canary }]
routez: []
"#;
    let got = problems(text, Format::Yaml);
    let want = [
        "admin.tokenfile: unknown field `tokenfile`; did you mean `tokenFile`?",
        "routes[0].tracks[0].weight: expected a number, found a string",
        "routes[0].tracks[1].protocol: expected http1 or h2c, found \"h3\"",
        "routes[1].tracks: expected a list, found a mapping",
        "trackHeader: expected a header name, or false to turn the header off, found 7",
        "timeouts.connect: invalid duration \"soon\"",
        "limits.maxHeaders: expected a whole number from 0 to",
        "routez: unknown field `routez`; did you mean `routes`?",
        "listen[0].address: invalid listen address \"nonsense\"",
        "timeouts.request: timeout must be longer than 0s",
        "timeouts.requestBodyGrace: timeout must be longer than 0s",
        "limits.requestBodyMinRate: expected a whole number from 0 to",
        "routes[2].rules[0].track: unknown track \"canary\" in route \"search\"; its tracks are: stable",
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for w in want {
        assert!(got.iter().any(|g| g.starts_with(w)), "missing {w:?} in {got:#?}");
    }
}

#[test]
fn the_state_file_is_a_path_or_false() {
    let state_file = |setting: &str| {
        let text = format!("admin: {{ stateFile: {setting} }}\nroutes: []");
        load_config(&text, Format::Yaml, 1).map(|l| l.config.admin.state_file)
    };
    assert_eq!(
        state_file("/var/lib/switchyard-proxy/state.json").unwrap(),
        StateFileSpec::Path("/var/lib/switchyard-proxy/state.json".to_owned())
    );
    assert_eq!(state_file("false").unwrap(), StateFileSpec::Off);
    for setting in ["false", "state.json"] {
        let text = format!("admin: {{ stateFile: {setting} }}\nroutes: []");
        let config = load_config(&text, Format::Yaml, 1).unwrap().config;
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(load_config(&json, Format::Json, 1).unwrap().config, config, "{json}");
    }
    for (setting, problem) in [
        (
            "true",
            "admin.stateFile: expected a path, or false to keep no state file, found true",
        ),
        (
            "7",
            "admin.stateFile: expected a path, or false to keep no state file, found 7",
        ),
        (
            "''",
            "admin.stateFile: file name is empty; give a path, or false to keep no state file",
        ),
    ] {
        let errors = state_file(setting).unwrap_err();
        let got: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
        assert_eq!(got, [problem], "stateFile: {setting}");
    }
}

#[test]
fn listeners_must_be_distinct_and_valid() {
    let text = "listen: [127.0.0.1:8080, 127.0.0.1:8080, '[::1]:80']\nadmin: { listen: '[::1]:80' }\nroutes: []";
    assert_eq!(
        problems(text, Format::Yaml),
        [
            "listen[1].address: address 127.0.0.1:8080 is already used by listen[0].address",
            "admin.listen: address [::1]:80 is already used by listen[2].address",
        ]
    );
}

#[test]
fn port_zero_listeners_never_collide() {
    let text = "listen: [127.0.0.1:0, 127.0.0.1:0]\nadmin: { listen: 127.0.0.1:0 }\nroutes: []";
    assert_eq!(problems(text, Format::Yaml), Vec::<String>::new());
}

#[test]
fn syntax_errors_say_where() {
    let got = problems("routes: [ {name: a", Format::Yaml);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("invalid YAML:") && got[0].contains("line"),
        "{got:?}"
    );
    let got = problems("{\"routes\": [}", Format::Json);
    assert!(
        got[0].starts_with("invalid JSON:") && got[0].contains("line 1"),
        "{got:?}"
    );
    let got = problems("- just\n- a list", Format::Yaml);
    assert_eq!(got, ["expected a mapping, found a list"]);
}

#[test]
fn json_and_yaml_read_the_same_and_what_is_served_back_reads_again() {
    let yaml = include_str!("../examples/sticky-canary.yaml");
    let from_yaml = load_config(yaml, Format::Yaml, 1).unwrap().config;
    let json = serde_json::to_string_pretty(&from_yaml).unwrap();
    let from_json = load_config(&json, Format::Json, 1).unwrap().config;
    assert_eq!(from_json, from_yaml);
    assert!(
        json.contains("\"pathPrefix\": \"/api\""),
        "camelCase on the wire:\n{json}"
    );
    assert!(json.contains("\"timeout\": \"5s\""), "durations as written:\n{json}");

    // `GET /routes` serves `{"version", "routes"}`; the same document can be `PUT` back.
    let table = load_config(yaml, Format::Yaml, 4).unwrap().table;
    let served = serde_json::json!({ "version": table.version(), "routes": table.spec() }).to_string();
    let again = load_routes(&served, Format::Json, 5).unwrap();
    assert_eq!(again.spec(), table.spec());
    assert_eq!(again.version(), 5);
}

#[test]
fn a_routes_document_takes_only_routes_and_version() {
    let err = load_routes("{\"routes\": [], \"listen\": \"127.0.0.1:1\"}", Format::Json, 1).unwrap_err();
    assert!(err.to_string().contains("listen: unknown field `listen`"), "{err}");
    let err = load_routes("{}", Format::Json, 1).unwrap_err();
    assert_eq!(err.errors()[0].to_string(), "routes: required field is missing");
}

#[test]
fn problems_print_one_per_line_with_a_count() {
    let err = load_routes(
        "routes: [{ name: a, tracks: [] }, { name: a, tracks: [] }]",
        Format::Yaml,
        1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "3 problems:\n  routes[0].tracks: list at least one track\n  routes[1].name: duplicate route name \"a\"\n  routes[1].tracks: list at least one track"
    );
}

#[test]
fn access_log_and_request_ids_are_read_checked_and_served_back() {
    let config = |settings: &str| load_config(&format!("{settings}\n{MINIMAL}"), Format::Yaml, 1);
    let c = config("").unwrap().config;
    assert_eq!(c.access_log, None);
    assert_eq!(c.request_id, RequestIdSpec::default());
    assert_eq!(c.request_id.mode, RequestIdMode::Keep);
    assert_eq!(c.timeouts.upgrade_idle, Duration::from_secs(3600));

    let text = "accessLog: { path: stdout }\nrequestId: { header: x-correlation-id, mode: off, response: true }\ntimeouts: { upgradeIdle: 5m }";
    let c = config(text).unwrap().config;
    assert_eq!(c.access_log.as_ref().unwrap().path, AccessLogPath::Stdout);
    assert_eq!(c.request_id.header, "x-correlation-id");
    assert_eq!((c.request_id.mode, c.request_id.response), (RequestIdMode::Off, true));
    assert_eq!(c.timeouts.upgrade_idle, Duration::from_secs(300));
    let file = config("accessLog: { path: /var/log/a.log }\nrequestId: { mode: replace }")
        .unwrap()
        .config;
    assert_eq!(
        file.access_log.as_ref().unwrap().path,
        AccessLogPath::File("/var/log/a.log".to_owned())
    );
    for c in [c, file] {
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(load_config(&json, Format::Json, 1).unwrap().config, c, "{json}");
    }

    for (settings, problem) in [
        (
            "accessLog: { path: '' }",
            "accessLog.path: file name is empty; give a file to append to, or stdout",
        ),
        ("accessLog: {}", "accessLog.path: required field is missing"),
        (
            "accessLog: { path: stdout, fromat: json }",
            "accessLog.fromat: unknown field",
        ),
        (
            "requestId: { mode: sometimes }",
            "requestId.mode: expected keep, replace or off, found",
        ),
        ("requestId: { header: 'x id' }", "requestId.header: invalid header name"),
        (
            "requestId: { header: Host }",
            "requestId.header: Host describes the message or its connection",
        ),
        (
            "requestId: { header: x-switchyard-track }",
            "requestId.header: x-switchyard-track is the trackHeader already",
        ),
        (
            "timeouts: { upgradeIdle: 0s }",
            "timeouts.upgradeIdle: timeout must be longer than 0s",
        ),
    ] {
        let got: Vec<String> = match config(settings) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors().iter().map(ToString::to_string).collect(),
        };
        assert!(
            got.len() == 1 && got[0].starts_with(problem),
            "{settings}: expected {problem:?}, got {got:#?}"
        );
    }
}

#[test]
fn outlier_detection_and_health_checks_are_off_unless_written_and_every_problem_is_named() {
    use switchyard_config::schema::{DEFAULT_EXPECTED_STATUSES, HealthCheckSpec, OutlierDetectionSpec};
    let track = |extra: &str| {
        format!(
            "routes: [{{ name: app, tracks: [{{ name: stable, endpoints: ['127.0.0.1:9001', '127.0.0.1:9002'], weight: 1{extra} }}] }}]"
        )
    };
    let table = load_config(MINIMAL, Format::Yaml, 1).unwrap().table;
    let stable = &table.routes()[0].tracks()[0];
    assert_eq!((stable.outlier_detection(), stable.health_check()), (None, None));

    let loaded = load_config(
        &track(", outlierDetection: {}, healthCheck: { path: /healthz }"),
        Format::Yaml,
        1,
    )
    .unwrap();
    let stable = &loaded.table.routes()[0].tracks()[0];
    let outlier = stable.outlier_detection().unwrap();
    assert_eq!(*outlier, OutlierDetectionSpec::default());
    assert_eq!(
        (
            outlier.consecutive_5xx,
            outlier.base_ejection_time,
            outlier.max_ejection_time,
            outlier.max_ejected_percent
        ),
        (5, Duration::from_secs(30), Duration::from_secs(300), 10)
    );
    let check = stable.health_check().unwrap();
    assert_eq!(
        (
            check.path.as_str(),
            check.interval,
            check.timeout,
            check.healthy_threshold,
            check.unhealthy_threshold
        ),
        ("/healthz", Duration::from_secs(5), Duration::from_secs(1), 2, 3)
    );

    let written = track(
        ", outlierDetection: { consecutive5xx: 0, consecutiveGatewayFailure: 3, consecutiveConnectErrors: 2, \
         baseEjectionTime: 10s, maxEjectionTime: 1m, maxEjectedPercent: 50 }, \
         healthCheck: { path: '/ready?deep=1', interval: 2s, timeout: 500ms, healthyThreshold: 1, unhealthyThreshold: 4 }",
    );
    let loaded = load_config(&written, Format::Yaml, 1).unwrap();
    let spec = &loaded.config.routes[0].tracks[0];
    assert_eq!(
        spec.outlier_detection,
        Some(OutlierDetectionSpec {
            consecutive_5xx: 0,
            consecutive_gateway_failure: 3,
            consecutive_connect_errors: 2,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(60),
            max_ejected_percent: 50,
        })
    );
    assert_eq!(
        spec.health_check,
        Some(HealthCheckSpec {
            path: "/ready?deep=1".to_owned(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(500),
            healthy_threshold: 1,
            unhealthy_threshold: 4,
            expected_statuses: vec![DEFAULT_EXPECTED_STATUSES],
        })
    );
    // What is served back (`GET /routes`, the state file) reads in again unchanged.
    let json = serde_json::to_string(&loaded.config).unwrap();
    assert_eq!(
        load_config(&json, Format::Json, 1).unwrap().config,
        loaded.config,
        "{json}"
    );

    const AT: &str = "routes[0].tracks[0]";
    for (extra, expected) in [
        (
            ", outlierDetection: { consecutive5xx: 0 }",
            vec![format!("{AT}.outlierDetection.consecutive5xx: every counter is 0")],
        ),
        (
            ", outlierDetection: { consecutive5xx: -1, baseEjectionTime: 0s, maxEjectedPercent: 0 }",
            vec![
                format!("{AT}.outlierDetection.consecutive5xx: expected a whole number from 0 to 4294967295, found -1"),
                format!("{AT}.outlierDetection.baseEjectionTime: the ejection time must be longer than 0s"),
                format!("{AT}.outlierDetection.maxEjectedPercent: give a share from 1 to 100 percent, found 0"),
            ],
        ),
        (
            ", outlierDetection: { baseEjectionTime: 5m, maxEjectionTime: 1m, maxEjectedPercent: 101 }",
            vec![
                format!(
                    "{AT}.outlierDetection.maxEjectionTime: the longest ejection (1m) is shorter than the first (5m)"
                ),
                format!("{AT}.outlierDetection.maxEjectedPercent: give a share from 1 to 100 percent, found 101"),
            ],
        ),
        (
            ", outlierDetection: { consecutive5XX: 3 }",
            vec![format!(
                "{AT}.outlierDetection.consecutive5XX: unknown field `consecutive5XX`; did you mean `consecutive5xx`?"
            )],
        ),
        (
            ", healthCheck: { interval: 5s }",
            vec![format!("{AT}.healthCheck.path: required field is missing")],
        ),
        (
            ", healthCheck: { path: healthz, interval: 0s, timeout: 0s, healthyThreshold: 0, unhealthyThreshold: 0 }",
            vec![
                format!(
                    "{AT}.healthCheck.path: \"healthz\" is not a request path; write one from the root, such as /healthz"
                ),
                format!("{AT}.healthCheck.interval: the interval must be longer than 0s"),
                format!("{AT}.healthCheck.timeout: the timeout must be longer than 0s"),
                format!("{AT}.healthCheck.healthyThreshold: the threshold must be at least 1"),
                format!("{AT}.healthCheck.unhealthyThreshold: the threshold must be at least 1"),
            ],
        ),
        (
            ", healthCheck: { path: /healthz, interval: 1s, timeout: 2s }",
            vec![format!(
                "{AT}.healthCheck.timeout: the timeout (2s) is longer than the interval (1s), so checks would overlap"
            )],
        ),
    ] {
        let got = problems(&track(extra), Format::Yaml);
        assert_eq!(got.len(), expected.len(), "{extra}: {got:#?}");
        for (got, expected) in got.iter().zip(&expected) {
            assert!(
                got.starts_with(expected.as_str()),
                "{extra}: expected {expected:?}, got {got:?}"
            );
        }
    }
}
