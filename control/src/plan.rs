//! Planning the next routing table: pure functions from the table a proxy serves and where the
//! rollout wants traffic to be, to the table to publish.

use switchyard_config::RouteSpec;
use switchyard_config::rollout::{Pause, RolloutSpec, Step, Strategy};
use switchyard_config::schema::{MirrorSpec, RequestMatch, RuleSpec};

/// Where a rollout wants its route's traffic.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// The candidate's share of weighted traffic, percent; the baseline gets the rest.
    pub candidate_weight: f64,
    /// Canary steps whose `setHeaderRoute` is in force: requests matching them go to the
    /// candidate first, whatever the weights.
    pub header_steps: Vec<usize>,
    /// The share of the route's requests copied to the candidate (a `setMirrorRoute` step),
    /// percent; 0: none. Absent from rollouts stored before it (then 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mirror_percent: f64,
    /// The `setMirrorRoute` step in force, whose `match` restricts the copies; `None` when no
    /// request is copied. Absent from rollouts stored before it (then every request is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_step: Option<usize>,
}

fn is_zero(percent: &f64) -> bool {
    *percent == 0.0
}

impl Traffic {
    /// Everything on the baseline, no header routes: where an abort sends traffic.
    pub fn baseline() -> Self {
        Self::default()
    }

    /// Everything on the candidate: where a completed rollout leaves traffic.
    pub fn candidate() -> Self {
        Self {
            candidate_weight: 100.0,
            header_steps: Vec::new(),
            mirror_percent: 0.0,
            mirror_step: None,
        }
    }

    /// The conditions of the copies in force, from the rollout's steps: empty, every request.
    pub fn mirror_matches(&self, spec: &RolloutSpec) -> Vec<RequestMatch> {
        match self.mirror_step.and_then(|i| steps(spec).into_iter().nth(i)) {
            Some(Step::SetMirrorRoute(m)) => m.matches,
            _ => Vec::new(),
        }
    }

    /// The header routes in force, from the rollout's steps.
    pub fn header_routes(&self, spec: &RolloutSpec) -> Vec<RequestMatch> {
        let steps = steps(spec);
        self.header_steps
            .iter()
            .filter_map(|i| match steps.get(*i) {
                Some(Step::SetHeaderRoute(m)) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The steps a rollout takes, whatever its strategy: a canary's own; blue-green and rings as the
/// equivalent canary steps, so one state machine runs all three.
///
/// Blue-green: the preview match reaches the candidate; pre-promotion analysis; a pause (timed
/// for auto-promotion, else until `promote`); the switch (through `switchSteps`, then 100%);
/// post-promotion analysis; the rollback window as a timed pause, during which `undo` is
/// instant. Rings: each ring adds its match (a header route) or its weight, stays at least its
/// `minDuration`, and must pass its exit analysis before the next opens; then everyone. The
/// spec's `promotionWebhook` is a `webhook` step: after a canary's steps and the last ring, and
/// right before a blue-green switch.
pub fn steps(spec: &RolloutSpec) -> Vec<Step> {
    let promotion = spec.promotion_webhook.clone().map(Step::Webhook);
    match &spec.strategy {
        Strategy::Canary(c) => {
            let mut steps = c.steps.clone();
            steps.extend(promotion.clone());
            steps
        }
        Strategy::BlueGreen(b) => {
            let mut steps = vec![Step::SetHeaderRoute(b.preview_match.clone())];
            steps.extend(b.pre_promotion_analysis.clone().map(Step::Analysis));
            steps.push(Step::Pause(Pause {
                duration: b.auto_promotion,
            }));
            steps.extend(promotion.clone());
            steps.extend(b.switch_steps.iter().map(|w| Step::SetWeight(*w)));
            steps.push(Step::SetWeight(100.0));
            steps.extend(b.post_promotion_analysis.clone().map(Step::Analysis));
            steps.push(Step::Pause(Pause {
                duration: Some(b.rollback_window),
            }));
            steps
        }
        Strategy::Rings(r) => {
            let mut steps = Vec::new();
            for ring in &r.rings {
                steps.extend(ring.matches.clone().map(Step::SetHeaderRoute));
                steps.extend(ring.weight.map(Step::SetWeight));
                if !ring.min_duration.is_zero() {
                    steps.push(Step::Pause(Pause {
                        duration: Some(ring.min_duration),
                    }));
                }
                steps.extend(ring.exit_analysis.clone().map(Step::Analysis));
            }
            steps.extend(promotion.clone());
            steps
        }
    }
}

/// What a step does, as the dashboard and the status show it: `weight 10%`, `pause 30s`,
/// `pause until promoted`, `header route`, `analysis`, `webhook gate`.
pub fn describe(step: &Step) -> String {
    match step {
        Step::SetWeight(w) => format!("weight {w}%"),
        Step::Pause(Pause { duration: Some(d) }) => format!("pause {}", humantime::format_duration(*d)),
        Step::Pause(Pause { duration: None }) => "pause until promoted".to_owned(),
        Step::SetHeaderRoute(_) => "header route".to_owned(),
        Step::Analysis(_) => "analysis".to_owned(),
        Step::Webhook(_) => "webhook gate".to_owned(),
        Step::SetMirrorRoute(m) => format!("mirror {}%", m.percent),
    }
}

/// Why a table cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The proxy's table has no such route.
    #[error("the proxy has no route {0:?}")]
    NoRoute(String),
    /// The route lacks a track the rollout names.
    #[error("route {route:?} has no track {track:?}")]
    NoTrack {
        /// The route.
        route: String,
        /// The missing track.
        track: String,
    },
}

/// The table `routes` with the rollout's route set to `traffic`: the baseline and candidate
/// weights split 100, every rule that sent requests to the candidate removed, and the header
/// routes put first; the route mirrors `traffic.mirror_percent` of its requests to the
/// candidate, those its step's `match` takes (with the default bound and methods; when every
/// condition names its methods, those methods), and a mirror to the candidate is removed when
/// that is 0 (one to another track is left alone). Other routes and tracks are untouched.
pub fn apply(routes: &[RouteSpec], spec: &RolloutSpec, traffic: &Traffic) -> Result<Vec<RouteSpec>, PlanError> {
    let mut routes = routes.to_vec();
    let route = routes
        .iter_mut()
        .find(|r| r.name == spec.route)
        .ok_or_else(|| PlanError::NoRoute(spec.route.to_string()))?;
    for track in [&spec.baseline, &spec.candidate] {
        if !route.tracks.iter().any(|t| &t.name == track) {
            return Err(PlanError::NoTrack {
                route: spec.route.to_string(),
                track: track.to_string(),
            });
        }
    }
    let w = traffic.candidate_weight.clamp(0.0, 100.0);
    for t in &mut route.tracks {
        if t.name == spec.candidate {
            t.weight = w;
        } else if t.name == spec.baseline {
            t.weight = 100.0 - w;
        }
    }
    route.rules.retain(|r| r.track != spec.candidate);
    let added = traffic.header_routes(spec).into_iter().map(|m| RuleSpec {
        matches: m,
        track: spec.candidate.clone(),
    });
    route.rules = added.chain(std::mem::take(&mut route.rules)).collect();
    let percent = traffic.mirror_percent.clamp(0.0, 100.0);
    if percent > 0.0 {
        let mut mirror = MirrorSpec::new(spec.candidate.clone(), percent);
        mirror.matches = traffic.mirror_matches(spec);
        // A condition that names its methods (`method: POST`) is to be copied: the mirror's own
        // list is theirs then, and each condition still holds its methods to itself.
        if !mirror.matches.is_empty() && mirror.matches.iter().all(|m| !m.method.is_empty()) {
            let mut methods: Vec<String> = Vec::new();
            for method in mirror.matches.iter().flat_map(|m| &m.method) {
                if !methods.contains(method) {
                    methods.push(method.clone());
                }
            }
            mirror.methods = methods;
        }
        route.mirror = Some(mirror);
    } else if route.mirror.as_ref().is_some_and(|m| m.track == spec.candidate) {
        route.mirror = None;
    }
    Ok(routes)
}

/// The candidate's weight, percent of the two tracks, as a table has it (for status).
pub fn candidate_weight(routes: &[RouteSpec], spec: &RolloutSpec) -> Option<f64> {
    let route = routes.iter().find(|r| r.name == spec.route)?;
    let weight = |name| route.tracks.iter().find(|t| &t.name == name).map(|t| t.weight);
    let (b, c) = (weight(&spec.baseline)?, weight(&spec.candidate)?);
    Some(if b + c > 0.0 { 100.0 * c / (b + c) } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::{Format, load_routes};

    fn routes() -> Vec<RouteSpec> {
        load_routes(
            r#"
routes:
  - name: other
    tracks: [{ name: stable, endpoints: ["127.0.0.1:1"], weight: 1 }]
  - name: checkout
    tracks:
      - { name: stable, endpoints: ["127.0.0.1:2"], weight: 100 }
      - { name: canary, endpoints: ["127.0.0.1:3"], weight: 0 }
      - { name: debug, endpoints: ["127.0.0.1:4"], weight: 0 }
    rules:
      - { match: { headers: [{ name: x-debug }] }, track: debug }
      - { match: { headers: [{ name: x-canary, value: "true" }] }, track: canary }
"#,
            Format::Yaml,
            1,
        )
        .unwrap()
        .spec()
        .to_vec()
    }

    fn spec() -> RolloutSpec {
        switchyard_config::load_rollout(
            "name: r\nroute: checkout\nproxies: ['http://127.0.0.1:9901']\nbaseline: stable\ncandidate: canary\n\
             canary: { steps: [{ setHeaderRoute: { headers: [{ name: x-beta, value: '1' }] } }, { setWeight: 5 }] }\n",
            Format::Yaml,
        )
        .unwrap()
    }

    #[test]
    fn weights_split_100_and_candidate_rules_are_replaced_by_header_routes() {
        let traffic = Traffic {
            candidate_weight: 25.0,
            header_steps: vec![0],
            mirror_percent: 0.0,
            mirror_step: None,
        };
        let next = apply(&routes(), &spec(), &traffic).unwrap();
        let checkout = &next[1];
        let weights: Vec<f64> = checkout.tracks.iter().map(|t| t.weight).collect();
        assert_eq!(weights, [75.0, 25.0, 0.0]);
        assert_eq!(checkout.rules.len(), 2);
        assert_eq!(checkout.rules[0].matches.headers[0].name, "x-beta");
        assert_eq!(checkout.rules[0].track.as_str(), "canary");
        assert_eq!(checkout.rules[1].track.as_str(), "debug");
        assert_eq!(next[0], routes()[0]);
        assert_eq!(candidate_weight(&next, &spec()), Some(25.0));
    }

    #[test]
    fn steps_are_described_as_people_read_them() {
        let spec = switchyard_config::load_rollout(
            "name: r\nroute: checkout\nproxies: ['http://127.0.0.1:9901']\nbaseline: stable\ncandidate: canary\n\
             canary: { steps: [{ setHeaderRoute: { headers: [{ name: x-beta, value: '1' }] } }, { setWeight: 12.5 },\
             { pause: { duration: 90s } }, { pause: {} }, { analysis: { interval: 1s, count: 3 } }] }\n",
            Format::Yaml,
        )
        .unwrap();
        let described: Vec<String> = steps(&spec).iter().map(describe).collect();
        assert_eq!(
            described,
            [
                "header route",
                "weight 12.5%",
                "pause 1m 30s",
                "pause until promoted",
                "analysis"
            ]
        );
    }

    #[test]
    fn a_mirror_step_copies_to_the_candidate_and_the_baseline_plan_removes_it() {
        let traffic = Traffic {
            mirror_percent: 50.0,
            ..Traffic::baseline()
        };
        let next = apply(&routes(), &spec(), &traffic).unwrap();
        let mirror = next[1].mirror.as_ref().unwrap();
        assert_eq!((mirror.track.as_str(), mirror.percent), ("canary", 50.0));
        assert_eq!(
            candidate_weight(&next, &spec()),
            Some(0.0),
            "a shadow takes no real request"
        );
        switchyard_config::RoutingTable::compile(&next, 2).expect("the planned table is valid");
        let back = apply(&next, &spec(), &Traffic::baseline()).unwrap();
        assert_eq!(back[1].mirror, None);
        // A mirror of the route to another track is not the rollout's to remove.
        let mut other = next.clone();
        other[1].mirror = Some(MirrorSpec::new("debug".into(), 5.0));
        let kept = apply(&other, &spec(), &Traffic::candidate()).unwrap();
        assert_eq!(kept[1].mirror.as_ref().map(|m| m.track.as_str()), Some("debug"));
    }

    #[test]
    fn a_mirror_steps_match_is_published_with_the_methods_it_names() {
        let spec = switchyard_config::load_rollout(
            "name: r\nroute: checkout\nproxies: ['http://127.0.0.1:9901']\nbaseline: stable\ncandidate: canary\n\
             canary: { steps: [{ setMirrorRoute: { percent: 20, match: [{ pathPrefix: /api, method: [GET, POST] }] } },\
             { setMirrorRoute: { percent: 5, match: [{ pathPrefix: /api, method: POST }, { headers: [{ name: x-shadow }] }] } },\
             { setMirrorRoute: { percent: 5 } }] }\n",
            Format::Yaml,
        )
        .unwrap();
        let mirror = |step| {
            let traffic = Traffic {
                mirror_percent: 20.0,
                mirror_step: Some(step),
                ..Traffic::baseline()
            };
            let next = apply(&routes(), &spec, &traffic).unwrap();
            switchyard_config::RoutingTable::compile(&next, 2).expect("the planned table is valid");
            next[1].mirror.clone().unwrap()
        };
        let first = mirror(0);
        assert_eq!(first.matches[0].path_prefix.as_deref(), Some("/api"));
        assert_eq!(first.methods, ["GET", "POST"]);
        // A condition without methods: the default methods, which the other still narrows.
        let second = mirror(1);
        assert_eq!(second.matches.len(), 2);
        assert_eq!(second.methods, ["GET", "HEAD", "OPTIONS"]);
        let third = mirror(2);
        assert!(third.matches.is_empty());
        // A rollout stored before steps were recorded copies every request.
        let old = Traffic {
            mirror_percent: 20.0,
            ..Traffic::baseline()
        };
        assert!(
            apply(&routes(), &spec, &old).unwrap()[1]
                .mirror
                .as_ref()
                .unwrap()
                .matches
                .is_empty()
        );
    }

    #[test]
    fn the_baseline_plan_removes_every_candidate_rule() {
        let next = apply(&routes(), &spec(), &Traffic::baseline()).unwrap();
        assert!(next[1].rules.iter().all(|r| r.track.as_str() != "canary"));
        assert_eq!(candidate_weight(&next, &spec()), Some(0.0));
    }

    #[test]
    fn missing_routes_and_tracks_are_errors() {
        let mut s = spec();
        s.route = "nope".into();
        assert_eq!(
            apply(&routes(), &s, &Traffic::baseline()),
            Err(PlanError::NoRoute("nope".into()))
        );
        let mut s = spec();
        s.candidate = "green".into();
        assert!(matches!(
            apply(&routes(), &s, &Traffic::baseline()),
            Err(PlanError::NoTrack { .. })
        ));
    }
}
