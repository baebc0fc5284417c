use super::*;

fn compile(m: &RequestMatch) -> Result<Matcher, Vec<String>> {
    let mut p = Problems::default();
    let (matcher, _) = Matcher::compile(m, "m", true, &mut p);
    p.into_result(matcher)
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

fn vm(name: &str) -> ValueMatch {
    ValueMatch {
        name: name.into(),
        value: None,
        one_of: None,
        regex: None,
        present: None,
    }
}

struct Req {
    method: Method,
    host: String,
    path: String,
    query: String,
    headers: HeaderMap,
}

impl Req {
    fn new(host: &str, path_and_query: &str) -> Self {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        Self {
            method: Method::GET,
            host: host.into(),
            path: path.into(),
            query: query.into(),
            headers: HeaderMap::new(),
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.append(name, value.parse().unwrap());
        self
    }

    fn matches(&self, m: &Matcher) -> bool {
        let view = RequestView {
            method: &self.method,
            host: &self.host,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            random: 0,
        };
        let mut buf = [0u8; 256];
        let host = normalize_host(&self.host, &mut buf).unwrap_or(b"");
        m.matches(&view, host)
    }
}

#[test]
fn hosts_match_exactly_or_by_wildcard_suffix_without_case_or_port() {
    let exact = compile(&RequestMatch {
        host: Some("Shop.Example.com".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(Req::new("shop.example.com", "/").matches(&exact));
    assert!(Req::new("SHOP.example.COM:8443", "/").matches(&exact));
    assert!(Req::new("shop.example.com.", "/").matches(&exact));
    assert!(!Req::new("www.shop.example.com", "/").matches(&exact));

    let wild = compile(&RequestMatch {
        host: Some("*.example.com".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(Req::new("a.example.com", "/").matches(&wild));
    assert!(Req::new("a.b.example.com:80", "/").matches(&wild));
    assert!(!Req::new("example.com", "/").matches(&wild));
    assert!(!Req::new("aexample.com", "/").matches(&wild));
}

#[test]
fn path_prefix_matches_whole_segments_and_ignores_a_trailing_slash() {
    for prefix in ["/api", "/api/"] {
        let m = compile(&RequestMatch {
            path_prefix: Some(prefix.into()),
            ..Default::default()
        })
        .unwrap();
        assert!(Req::new("h", "/api").matches(&m), "{prefix}");
        assert!(Req::new("h", "/api/").matches(&m), "{prefix}");
        assert!(Req::new("h", "/api/v1?x=1").matches(&m), "{prefix}");
        assert!(!Req::new("h", "/apix").matches(&m), "{prefix}");
        assert!(!Req::new("h", "/").matches(&m), "{prefix}");
    }
    let root = compile(&RequestMatch {
        path_prefix: Some("/".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(Req::new("h", "/").matches(&root));
    assert!(Req::new("h", "/anything/at/all").matches(&root));
}

#[test]
fn exact_path_and_regex_path_match_the_whole_path() {
    let exact = compile(&RequestMatch {
        path: Some("/health".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(Req::new("h", "/health?full=1").matches(&exact));
    assert!(!Req::new("h", "/health/x").matches(&exact));

    let re = compile(&RequestMatch {
        path_regex: Some("/users/[0-9]+".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(Req::new("h", "/users/42").matches(&re));
    assert!(!Req::new("h", "/users/42/orders").matches(&re));
    assert!(!Req::new("h", "/v2/users/42").matches(&re));
}

#[test]
fn methods_must_be_one_of_the_listed() {
    let m = compile(&RequestMatch {
        method: vec!["POST".into(), "PUT".into()],
        ..Default::default()
    })
    .unwrap();
    let mut r = Req::new("h", "/");
    assert!(!r.matches(&m));
    r.method = Method::PUT;
    assert!(r.matches(&m));
}

#[test]
fn header_conditions_cover_value_one_of_regex_present_and_absent() {
    let cond = |f: fn(&mut ValueMatch)| {
        let mut v = vm("X-User-Group");
        f(&mut v);
        compile(&RequestMatch {
            headers: vec![v],
            ..Default::default()
        })
        .unwrap()
    };
    let exact = cond(|v| v.value = Some("internal".into()));
    let one_of = cond(|v| v.one_of = Some(vec!["internal".into(), "beta".into()]));
    let regex = cond(|v| v.regex = Some("int.*".into()));
    let present = cond(|_| ());
    let absent = cond(|v| v.present = Some(false));

    let none = Req::new("h", "/");
    let internal = Req::new("h", "/").header("x-user-group", "internal");
    let beta = Req::new("h", "/").header("x-user-group", "beta");
    let both = Req::new("h", "/")
        .header("x-user-group", "other")
        .header("x-user-group", "beta");

    assert!(internal.matches(&exact) && !beta.matches(&exact) && !none.matches(&exact));
    assert!(internal.matches(&one_of) && beta.matches(&one_of) && both.matches(&one_of) && !none.matches(&one_of));
    assert!(internal.matches(&regex) && !beta.matches(&regex));
    assert!(beta.matches(&present) && !none.matches(&present));
    assert!(none.matches(&absent) && !beta.matches(&absent));
    // Values are case-sensitive.
    assert!(!Req::new("h", "/").header("x-user-group", "Internal").matches(&exact));
}

#[test]
fn query_parameters_are_compared_after_percent_decoding() {
    let mut v = vm("user name");
    v.value = Some("a&b".into());
    let m = compile(&RequestMatch {
        query_params: vec![v],
        ..Default::default()
    })
    .unwrap();
    assert!(Req::new("h", "/?x=1&user%20name=a%26b").matches(&m));
    assert!(!Req::new("h", "/?user%20name=a").matches(&m));
    assert!(!Req::new("h", "/").matches(&m));

    let mut flag = vm("debug");
    flag.present = Some(true);
    let present = compile(&RequestMatch {
        query_params: vec![flag],
        ..Default::default()
    })
    .unwrap();
    assert!(Req::new("h", "/?debug").matches(&present));
    assert!(!Req::new("h", "/?debugx=1").matches(&present));

    let mut off = vm("debug");
    off.present = Some(false);
    let absent = compile(&RequestMatch {
        query_params: vec![off],
        ..Default::default()
    })
    .unwrap();
    assert!(Req::new("h", "/?a=1").matches(&absent));
    assert!(!Req::new("h", "/?a=1&debug=0").matches(&absent));
}

#[test]
fn cookies_are_found_in_every_cookie_header() {
    let mut v = vm("uid");
    v.value = Some("42".into());
    let m = compile(&RequestMatch {
        cookies: vec![v],
        ..Default::default()
    })
    .unwrap();
    assert!(Req::new("h", "/").header("cookie", "a=1; uid=42").matches(&m));
    assert!(
        Req::new("h", "/")
            .header("cookie", "a=1")
            .header("cookie", "uid=\"42\"")
            .matches(&m)
    );
    assert!(!Req::new("h", "/").header("cookie", "xuid=42; uid=4").matches(&m));
}

#[test]
fn percent_decode_keeps_malformed_escapes_and_refuses_overflow() {
    let mut buf = [0u8; 8];
    assert_eq!(percent_decode(b"a%2Fb", &mut buf), Some(&b"a/b"[..]));
    assert_eq!(percent_decode(b"100%", &mut buf), Some(&b"100%"[..]));
    assert_eq!(percent_decode(b"%zz", &mut buf), Some(&b"%zz"[..]));
    assert_eq!(percent_decode(b"123456789", &mut buf), None);
}

#[test]
fn bad_conditions_are_reported_by_path() {
    let mut both = vm("x");
    both.value = Some("a".into());
    both.regex = Some("b".into());
    let mut empty = vm("y");
    empty.one_of = Some(vec![]);
    let mut huge = vm("z");
    huge.regex = Some("a{1000}{1000}".into());
    let mut escape = vm("w");
    escape.regex = Some("a)|(b".into());
    let errors = compile(&RequestMatch {
        host: Some("shop.example.com:80".into()),
        path: Some("/a".into()),
        path_prefix: Some("nope".into()),
        method: vec!["get".into()],
        headers: vec![both, empty, huge, escape, vm("bad header")],
        ..Default::default()
    })
    .unwrap_err();
    let expect = [
        "m.host: host \"shop.example.com:80\" must not contain a port",
        "m.path: give at most one of path, pathPrefix and pathRegex",
        "m.method[0]: methods are case-sensitive: write \"GET\"",
        "m.headers[0]: give at most one of value, oneOf, regex and present",
        "m.headers[1].oneOf: list at least one value",
        "m.headers[2].regex: regex compiles to more than",
        "m.headers[3].regex: invalid regex \"a)|(b\"",
        "m.headers[4].name: invalid header name \"bad header\"",
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for (e, want) in errors.iter().zip(expect) {
        assert!(e.starts_with(want), "{e} does not start with {want}");
    }
}

#[test]
fn oversized_regex_pattern_is_refused_before_compiling() {
    let mut long = vm("x");
    long.regex = Some("a".repeat(MAX_REGEX_LEN + 1));
    let errors = compile(&RequestMatch {
        headers: vec![long],
        ..Default::default()
    })
    .unwrap_err();
    assert!(errors[0].contains("the limit is 1024"), "{errors:?}");
}

#[test]
fn host_normalization_strips_port_and_dot_and_refuses_overlong_names() {
    let mut buf = [0u8; 256];
    assert_eq!(normalize_host("A.B:80", &mut buf), Some(&b"a.b"[..]));
    assert_eq!(normalize_host("[::1]:80", &mut buf), Some(&b"[::1]"[..]));
    assert_eq!(normalize_host("x.", &mut buf), Some(&b"x"[..]));
    assert_eq!(normalize_host(&"a".repeat(300), &mut buf), None);
}
