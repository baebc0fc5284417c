//! Builds routing tables as YAML text, to load, `PUT` or write to a config file.

use std::fmt::Write as _;

/// A table under construction; each call adds to the last route.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: String,
    routes: Vec<Route>,
}

#[derive(Debug, Clone, Default)]
struct Route {
    name: String,
    matches: Vec<String>,
    tracks: Vec<String>,
    rules: Vec<String>,
    sticky: Option<String>,
    mirror: Option<String>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Proxy-level settings (YAML lines such as `listen: 127.0.0.1:0`) before `routes:`.
    pub fn setting(mut self, line: &str) -> Self {
        self.header.push_str(line);
        self.header.push('\n');
        self
    }

    /// A listener and admin listener on free loopback ports.
    pub fn on_free_ports(self) -> Self {
        self.setting("listen: 127.0.0.1:0")
            .setting("admin: { listen: 127.0.0.1:0 }")
    }

    /// Starts a route that matches every request.
    pub fn route(mut self, name: &str) -> Self {
        self.routes.push(Route {
            name: name.to_owned(),
            ..Route::default()
        });
        self
    }

    /// Adds a condition to the route's match (`host: a.example.com`, `pathPrefix: /api`).
    pub fn matching(mut self, condition: &str) -> Self {
        self.last().matches.push(condition.to_owned());
        self
    }

    /// Adds a track with endpoints and weight.
    pub fn track(self, name: &str, endpoints: &[String], weight: f64) -> Self {
        self.track_with(name, endpoints, weight, "")
    }

    /// Adds a track with extra fields (`protocol: h2c`).
    pub fn track_with(mut self, name: &str, endpoints: &[String], weight: f64, extra: &str) -> Self {
        let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        };
        self.last().tracks.push(format!(
            "{{ name: {name}, endpoints: [{}], weight: {weight}{extra} }}",
            endpoints.join(", ")
        ));
        self
    }

    /// A rule: requests whose `header` equals `value` go to `track`.
    pub fn header_rule(self, header: &str, value: &str, track: &str) -> Self {
        self.rule(&format!("headers: [{{ name: {header}, value: \"{value}\" }}]"), track)
    }

    /// A rule with any match body (`cookies: [{ name: beta, value: "1" }]`).
    pub fn rule(mut self, matches: &str, track: &str) -> Self {
        self.last()
            .rules
            .push(format!("{{ match: {{ {matches} }}, track: {track} }}"));
        self
    }

    /// Sticky by a header.
    pub fn sticky_header(mut self, header: &str) -> Self {
        self.last().sticky = Some(format!("{{ header: {header} }}"));
        self
    }

    /// Sticky by a cookie.
    pub fn sticky_cookie(mut self, cookie: &str) -> Self {
        self.last().sticky = Some(format!("{{ cookie: {cookie} }}"));
        self
    }

    /// A mirror, the body of `mirror: { ... }` (`track: canary, percent: 50`).
    pub fn mirror(mut self, spec: &str) -> Self {
        self.last().mirror = Some(format!("{{ {spec} }}"));
        self
    }

    /// The whole document.
    pub fn yaml(&self) -> String {
        let mut out = self.header.clone();
        out.push_str("routes:\n");
        for r in &self.routes {
            let _ = writeln!(out, "  - name: {}", r.name);
            if !r.matches.is_empty() {
                let _ = writeln!(out, "    match: {{ {} }}", r.matches.join(", "));
            }
            let _ = writeln!(out, "    tracks:");
            for t in &r.tracks {
                let _ = writeln!(out, "      - {t}");
            }
            if !r.rules.is_empty() {
                let _ = writeln!(out, "    rules:");
                for rule in &r.rules {
                    let _ = writeln!(out, "      - {rule}");
                }
            }
            if let Some(s) = &r.sticky {
                let _ = writeln!(out, "    sticky: {s}");
            }
            if let Some(m) = &r.mirror {
                let _ = writeln!(out, "    mirror: {m}");
            }
        }
        out
    }

    fn last(&mut self) -> &mut Route {
        if self.routes.is_empty() {
            self.routes.push(Route {
                name: "default".to_owned(),
                ..Route::default()
            });
        }
        let n = self.routes.len() - 1;
        &mut self.routes[n]
    }
}
