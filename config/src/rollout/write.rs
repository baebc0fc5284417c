//! Writing a rollout spec in the shape it is read in, so that a serialized spec reads back
//! equal: a strategy, a step and a check are each one key of a mapping (`setWeight: 5`,
//! `latencyP99Ms: {max: 500}`), which serde's derived enum shapes do not give.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::{EmergencySpec, MetricCheck, Step, Strategy};

impl Serialize for Strategy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match self {
            Self::Canary(c) => map.serialize_entry(self.key(), c)?,
            Self::BlueGreen(b) => map.serialize_entry(self.key(), b)?,
            // `rings:` holds the list itself.
            Self::Rings(r) => map.serialize_entry(self.key(), &r.rings)?,
        }
        map.end()
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match self {
            Self::SetWeight(w) => map.serialize_entry(self.key(), w)?,
            Self::Pause(pause) => map.serialize_entry(self.key(), pause)?,
            Self::SetHeaderRoute(m) => map.serialize_entry(self.key(), m)?,
            Self::Analysis(a) => map.serialize_entry(self.key(), a)?,
            Self::Webhook(w) => map.serialize_entry(self.key(), w)?,
            Self::SetMirrorRoute(m) => map.serialize_entry(self.key(), m)?,
        }
        map.end()
    }
}

/// The body of a check with one number: `{min: 0.995}`, `{max: 500}`, `{maxRatio: 1.2}`,
/// `{confidence: 0.99}`.
struct One(&'static str, f64);

impl Serialize for One {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &self.1)?;
        map.end()
    }
}

/// `{maxRatio?, maxDiff?}`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct VsBaseline {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_diff: Option<f64>,
}

/// Written as one entry, so that a [`super::MetricSpec`] (which flattens its check beside its
/// `name`) reads `{name, latencyP99Ms: {max}}`.
impl Serialize for MetricCheck {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        let key = self.key();
        match *self {
            Self::SuccessRate { min } | Self::RequestRate { min } => map.serialize_entry(key, &One("min", min))?,
            Self::ErrorRate { max } => map.serialize_entry(key, &One("max", max))?,
            Self::Latency { max_ms, .. } => map.serialize_entry(key, &One("max", max_ms))?,
            Self::LatencyVsBaseline { max_ratio, .. } => map.serialize_entry(key, &One("maxRatio", max_ratio))?,
            Self::SequentialErrorRate { confidence } => map.serialize_entry(key, &One("confidence", confidence))?,
            Self::ErrorRateVsBaseline { max_ratio, max_diff } => {
                map.serialize_entry(key, &VsBaseline { max_ratio, max_diff })?
            }
            Self::Prometheus(ref q) => map.serialize_entry(key, q)?,
            Self::Web(ref w) => map.serialize_entry(key, w)?,
        }
        map.end()
    }
}

impl Serialize for EmergencySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let limits = [("errorRate", self.error_rate), ("latencyP99Ms", self.latency_p99_ms)];
        let mut map = s.serialize_map(Some(limits.iter().filter(|(_, l)| l.is_some()).count()))?;
        for (key, limit) in limits {
            if let Some(max) = limit {
                map.serialize_entry(key, &One("max", max))?;
            }
        }
        map.end()
    }
}
