//! Every file in `config/examples/` and every configuration block in the README validates, and
//! each example routes the way its comments say.

use std::path::Path;

use http::{HeaderMap, Method};
use switchyard_config::{DecidedBy, Format, RequestView, RoutingTable, load_config};

fn load(name: &str) -> RoutingTable {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let format = if name.ends_with(".json") {
        Format::Json
    } else {
        Format::Yaml
    };
    load_config(&text, format, 1)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .table
}

/// `(route, track)` for a request; `random` drives the weighted pick.
fn route_track(
    t: &RoutingTable,
    method: Method,
    host: &str,
    path_and_query: &str,
    headers: &[(&'static str, &str)],
    random: u64,
) -> Option<(String, String, DecidedBy)> {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut h = HeaderMap::new();
    for (name, value) in headers {
        h.append(*name, value.parse().unwrap());
    }
    let view = RequestView {
        method: &method,
        host,
        path,
        query,
        headers: &h,
        random,
    };
    t.decide(&view)
        .map(|d| (d.route.name().to_string(), d.track.name().to_string(), d.by))
}

fn track(t: &RoutingTable, host: &str, path: &str, headers: &[(&'static str, &str)], random: u64) -> Option<String> {
    route_track(t, Method::GET, host, path, headers, random).map(|d| d.1)
}

/// The share of `n` evenly spread random numbers that land on `name`.
fn share(t: &RoutingTable, host: &str, name: &str) -> f64 {
    let n = 10_000u64;
    let step = u64::MAX / n;
    let hits = (0..n)
        .filter(|i| track(t, host, "/", &[], i * step).as_deref() == Some(name))
        .count();
    hits as f64 / n as f64
}

#[test]
fn every_example_file_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        // A proxy run on an example keeps its state file (and the file's lock) beside it.
        .filter(|name| !name.contains(".state.json"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "blue-green.yaml",
            "canary-weight.json",
            "canary-weight.yaml",
            "ejection-health-checks.yaml",
            "rings.yaml",
            "rollout-blue-green.yaml",
            "rollout-canary-header.yaml",
            "rollout-canary.yaml",
            "rollout-gated.yaml",
            "rollout-group.yaml",
            "rollout-prometheus.yaml",
            "rollout-rings.yaml",
            "rollout-shadow.yaml",
            "shadow.yaml",
            "sticky-canary.yaml"
        ],
        "a new example needs its own test below (rollout specs: in tests/rollouts.rs)"
    );
    for name in &names {
        if name.starts_with("rollout-") {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            switchyard_config::load_rollout(&text, Format::sniff(&text)).unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            load(name);
        }
    }
}

#[test]
fn canary_by_weight_means_what_its_comments_say() {
    let t = load("canary-weight.yaml");
    let host = "shop.example.com";
    let canary = share(&t, host, "canary");
    assert!((canary - 0.05).abs() < 0.001, "canary share {canary}");
    assert_eq!(
        track(&t, host, "/", &[("x-canary", "true")], 0).as_deref(),
        Some("canary")
    );
    assert_eq!(
        track(&t, host, "/", &[("x-environment", "stable")], u64::MAX).as_deref(),
        Some("stable")
    );
    // Sticky by x-user-id: the same user, the same track, whatever the random number.
    for user in ["alice", "bob", "carol"] {
        let first = track(&t, host, "/", &[("x-user-id", user)], 0);
        assert_eq!(track(&t, host, "/", &[("x-user-id", user)], u64::MAX), first);
    }
    // The host condition: a leading wildcard, not the bare domain.
    assert!(track(&t, "example.com", "/", &[], 0).is_none());
    assert!(track(&t, "a.b.example.com", "/", &[], 0).is_some());
}

#[test]
fn canary_by_weight_in_json_splits_999_to_1() {
    let t = load("canary-weight.json");
    let canary = share(&t, "x.example.com", "canary");
    assert!((canary - 0.001).abs() < 0.0005, "canary share {canary}");
    assert_eq!(
        track(&t, "x.example.com", "/", &[("x-canary", "true")], 0).as_deref(),
        Some("canary")
    );
}

#[test]
fn blue_green_sends_everything_to_blue_and_previews_green_by_header() {
    let t = load("blue-green.yaml");
    let host = "shop.example.com";
    assert_eq!(share(&t, host, "blue"), 1.0);
    assert_eq!(
        track(&t, host, "/", &[("x-environment", "green")], 0).as_deref(),
        Some("green")
    );
    assert_eq!(
        track(&t, host, "/", &[("x-environment", "blue")], 0).as_deref(),
        Some("blue")
    );
    assert!(track(&t, "other.example.com", "/", &[], 0).is_none());
    let blue = t.route("storefront").unwrap().track("blue").unwrap();
    assert_eq!(
        blue.endpoints().iter().map(|e| e.weight()).collect::<Vec<_>>(),
        [1.0, 2.0]
    );
}

#[test]
fn sticky_canary_keeps_users_by_cookie_and_takes_a_query_override() {
    let t = load("sticky-canary.yaml");
    for uid in ["u1", "u2", "u3", "u4"] {
        let cookie = format!("uid={uid}");
        let first = route_track(&t, Method::POST, "any", "/api/orders", &[("cookie", &cookie)], 0).unwrap();
        assert_eq!(first.2, DecidedBy::Sticky);
        let again = route_track(&t, Method::POST, "any", "/api/orders", &[("cookie", &cookie)], u64::MAX).unwrap();
        assert_eq!(again, first);
    }
    let forced = route_track(&t, Method::GET, "any", "/api/x?canary=1", &[("cookie", "uid=u1")], 0).unwrap();
    assert_eq!((forced.1.as_str(), forced.2), ("canary", DecidedBy::Rule(0)));
    // PATCH is not among the route's methods, and /apix is not under /api.
    assert!(route_track(&t, Method::PATCH, "any", "/api/x", &[], 0).is_none());
    assert!(route_track(&t, Method::GET, "any", "/apix", &[], 0).is_none());
    assert_eq!(
        route_track(&t, Method::GET, "any", "/img/logo.svg", &[], 0).unwrap().0,
        "static"
    );
    assert!(route_track(&t, Method::GET, "any", "/img/logo.gif", &[], 0).is_none());
    assert_eq!(
        t.route("api").unwrap().track("canary").unwrap().protocol(),
        switchyard_config::schema::UpstreamProtocol::H2c
    );
}

#[test]
fn rings_open_to_internal_and_beta_users_and_respect_opt_out() {
    let t = load("rings.yaml");
    let host = "search.example.com";
    for group in ["internal", "beta"] {
        assert_eq!(
            track(&t, host, "/", &[("x-user-group", group)], 0).as_deref(),
            Some("canary")
        );
    }
    assert_eq!(
        track(&t, host, "/", &[("x-user-group", "public")], 0).as_deref(),
        Some("stable")
    );
    let opted_out = track(
        &t,
        host,
        "/",
        &[("x-user-group", "internal"), ("cookie", "canary_optout=1")],
        u64::MAX,
    );
    assert_eq!(opted_out.as_deref(), Some("stable"));
    let everyone = share(&t, host, "canary");
    assert!((everyone - 0.01).abs() < 0.002, "canary share {everyone}");
}

#[test]
fn shadow_sends_every_request_to_stable_and_copies_every_get_to_canary() {
    let t = load("shadow.yaml");
    assert_eq!(
        share(&t, "shop.example.com", "stable"),
        1.0,
        "canary takes no real request"
    );
    let h = HeaderMap::new();
    let decide = |method: &Method, random: u64| {
        let view = RequestView {
            method,
            host: "shop.example.com",
            path: "/",
            query: "",
            headers: &h,
            random,
        };
        t.decide(&view)
            .and_then(|d| d.shadow)
            .map(|s| s.track.name().to_string())
    };
    for random in [0, 1 << 40, u64::MAX] {
        assert_eq!(decide(&Method::GET, random).as_deref(), Some("canary"));
        assert_eq!(decide(&Method::POST, random), None, "only safe methods");
    }
    assert_eq!(t.routes()[0].mirror().map(|(_, max)| max), Some(100));
}

#[test]
fn the_container_configuration_validates() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/proxy.yaml")).unwrap();
    let loaded = load_config(&text, Format::Yaml, 1).unwrap_or_else(|e| panic!("deploy/proxy.yaml: {e}"));
    assert_eq!(loaded.config.listen[0].address, "0.0.0.0:8080");
    assert_eq!(
        track(&loaded.table, "svc", "/", &[("x-canary", "true")], 0).as_deref(),
        Some("canary")
    );
}

#[test]
fn ejection_and_health_checks_mean_what_their_comments_say() {
    use std::time::Duration;
    let t = load("ejection-health-checks.yaml");
    let route = t.route("checkout").unwrap();
    let stable = route.track("stable").unwrap();
    let outlier = stable.outlier_detection().unwrap();
    assert_eq!(outlier.consecutive_5xx, 5);
    let lengths: Vec<u64> = (1..=12).map(|n| outlier.ejection_time(n).as_secs()).collect();
    assert_eq!(lengths[..3], [30, 60, 90]);
    assert_eq!(lengths[11], 300, "up to 5m");
    assert_eq!(outlier.max_ejected(3), 1, "half of three, rounded down; never the last");
    let check = stable.health_check().unwrap();
    assert_eq!(
        (
            check.path.as_str(),
            check.interval,
            check.timeout,
            check.unhealthy_threshold,
            check.healthy_threshold
        ),
        ("/healthz", Duration::from_secs(5), Duration::from_secs(1), 3, 2)
    );
    let canary = route.track("canary").unwrap();
    let outlier = canary.outlier_detection().unwrap();
    assert_eq!((outlier.consecutive_5xx, outlier.consecutive_gateway_failure), (0, 3));
    assert_eq!(
        (outlier.ejection_time(1).as_secs(), outlier.ejection_time(9).as_secs()),
        (10, 60)
    );
    assert_eq!(canary.health_check(), None);
    assert!((share(&t, "shop.example.com", "canary") - 0.10).abs() < 0.01);
}

#[test]
fn every_configuration_block_in_the_readme_validates() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let mut blocks = 0;
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let format = match line.trim() {
            "```yaml" => Format::Yaml,
            "```json" => Format::Json,
            _ => continue,
        };
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let text = block.join("\n");
        load_config(&text, format, 1).unwrap_or_else(|e| panic!("README block:\n{text}\n{e}"));
        blocks += 1;
    }
    assert!(blocks >= 1, "the README shows at least one configuration");
}

#[test]
fn the_dns_example_of_the_configuration_reference_validates_with_its_defaults() {
    let reference = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md")).unwrap();
    let mut lines = reference
        .lines()
        .skip_while(|l| *l != "## Endpoints by name (DNS)")
        .skip_while(|l| l.trim() != "```yaml")
        .skip(1);
    let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
    let text = block.join("\n");
    let loaded = load_config(&text, Format::Yaml, 1).unwrap_or_else(|e| panic!("docs/config.md block:\n{text}\n{e}"));
    assert_eq!(
        loaded.config.dns,
        switchyard_config::schema::DnsSpec::default(),
        "it shows the defaults"
    );
    let names: Vec<&str> = switchyard_config::table::host_names(loaded.table.spec())
        .into_iter()
        .collect();
    assert_eq!(
        names,
        ["app-canary.prod.svc.cluster.local", "app-stable.prod.svc.cluster.local"]
    );
}

#[test]
fn the_retry_example_of_the_configuration_reference_validates_as_it_reads() {
    let reference = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md")).unwrap();
    let mut lines = reference
        .lines()
        .skip_while(|l| *l != "## Retries")
        .skip_while(|l| l.trim() != "```yaml")
        .skip(1);
    let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
    let text = block.join("\n");
    let loaded = load_config(&text, Format::Yaml, 1).unwrap_or_else(|e| panic!("docs/config.md block:\n{text}\n{e}"));
    let retry = loaded.table.routes()[0].retry().expect("the example retries");
    assert_eq!(retry.attempts(), 2);
    assert!([502, 503, 504].iter().all(|s| retry.retries_status(*s)) && !retry.retries_status(500));
    assert_eq!(retry.per_try_timeout(), Some(std::time::Duration::from_secs(2)));
    // The example writes the budget's defaults out.
    assert_eq!(retry.budget(), &switchyard_config::retry::BudgetSpec::default());
}

/// The `nth` (from 0) YAML block after `heading` in `file` (from the repository's root).
fn block_after(file: &str, heading: &str, nth: usize) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file)).unwrap();
    let mut lines = text.lines().skip_while(|l| *l != heading);
    for _ in 0..nth {
        lines
            .by_ref()
            .skip_while(|l| l.trim() != "```yaml")
            .skip(1)
            .find(|l| l.trim() == "```");
    }
    let block: Vec<&str> = lines
        .skip_while(|l| l.trim() != "```yaml")
        .skip(1)
        .take_while(|l| l.trim() != "```")
        .collect();
    block.join("\n")
}

/// Whether a request to route `orders` of `t` is copied, and to which track.
fn copied_to(t: &RoutingTable, method: &Method, path: &str, headers: &[(&'static str, &str)]) -> Option<String> {
    let mut h = HeaderMap::new();
    for (name, value) in headers {
        h.insert(*name, value.parse().unwrap());
    }
    let view = RequestView {
        method,
        host: "shop.example.com",
        path,
        query: "",
        headers: &h,
        random: 0,
    };
    t.decide(&view)
        .and_then(|d| d.shadow)
        .map(|s| s.track.name().to_string())
}

#[test]
fn the_shadow_examples_with_a_match_and_a_body_bound_mean_what_they_say() {
    // docs/config.md: 25% of POSTs and GETs of /api/orders or marked x-shadow, bodies to 64 KiB.
    let text = block_after("docs/config.md", "## Shadow traffic", 0);
    let t = load_config(&text, Format::Yaml, 1)
        .unwrap_or_else(|e| panic!("docs/config.md block:\n{text}\n{e}"))
        .table;
    let orders = t.route("orders").unwrap();
    assert_eq!(orders.mirror_max_body(), Some(65_536));
    assert_eq!(
        orders.mirror().map(|(track, max)| (track.name().as_str(), max)),
        Some(("canary", 100))
    );
    let share = |method: &Method, path: &str, headers: &[(&'static str, &str)]| {
        let h: HeaderMap = headers
            .iter()
            .map(|(n, v)| (http::HeaderName::from_static(n), v.parse().unwrap()))
            .collect();
        (0..20_000u64)
            .filter(|i| {
                let view = RequestView {
                    method,
                    host: "x",
                    path,
                    query: "",
                    headers: &h,
                    random: i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i << 7),
                };
                t.decide(&view).and_then(|d| d.shadow).is_some()
            })
            .count() as f64
            / 20_000.0
    };
    let post = share(&Method::POST, "/api/orders/7", &[]);
    assert!((post - 0.25).abs() < 0.02, "{post}");
    assert_eq!(share(&Method::GET, "/static/app.js", &[]), 0.0, "no condition holds");
    assert!(share(&Method::GET, "/static/app.js", &[("x-shadow", "yes")]) > 0.2);
    assert_eq!(share(&Method::PUT, "/api/orders/7", &[]), 0.0, "PUT is not listed");

    // README: every POST and PUT of /api/orders, bodies to 64 KiB (the section's second block).
    let second = block_after("README.md", "## Shadow traffic", 1);
    let t = load_config(&second, Format::Yaml, 1)
        .unwrap_or_else(|e| panic!("README block:\n{second}\n{e}"))
        .table;
    assert_eq!(t.route("orders").unwrap().mirror_max_body(), Some(65_536));
    for method in [Method::POST, Method::PUT] {
        assert_eq!(
            copied_to(&t, &method, "/api/orders", &[]).as_deref(),
            Some("canary"),
            "{method}"
        );
    }
    assert_eq!(copied_to(&t, &Method::POST, "/api/users", &[]), None);
    assert_eq!(copied_to(&t, &Method::GET, "/api/orders", &[]), None);
}
