//! The admin API's `GET /stats` body, and the histogram encoding it carries.
//!
//! The JSON shape is a contract with the controller: fields may be added, never renamed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{DeserializeError, Deserializer, Serializer as _, V2DeflateSerializer};
use serde_json::{Map, Value, json};

use super::{ClientError, TrackStats, WindowStats, route_client_errors};

impl WindowStats {
    /// The `GET /stats` body, `version` being the routing table's version:
    ///
    /// ```json
    /// {"version": 7, "windowSeconds": 10, "routes": {"checkout": {"tracks": {"canary": {
    ///   "requests": 0, "errors": 0, "errorRate": 0.0,
    ///   "statusClasses": {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
    ///   "upstreamErrors": {"connect": 0, "timeout": 0, "reset": 0, "protocol": 0},
    ///   "latencyMs": {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0},
    ///   "histogram": "<base64>"}},
    ///   "clientErrors": {"malformed": 0, "timeout": 0, "aborted": 0}}}}
    /// ```
    ///
    /// `clientErrors` counts, per route, what clients did wrong (see
    /// [`super::ClientError`]); none of it is in any track's numbers.
    ///
    /// `errorRate` is `errors / requests` (0.0 without requests). `latencyMs` values are
    /// milliseconds as floats (the histogram's µs / 1000, each the highest value equivalent to the
    /// quantile within 3 significant digits), 0.0 without requests. `histogram` is the latency
    /// histogram in µs as [`encode_histogram`] writes it, for exact merging across proxies.
    pub fn to_json(&self, version: u64) -> Value {
        let routes: Map<String, Value> = self
            .routes
            .iter()
            .map(|(route, tracks)| {
                let tracks_json: Map<String, Value> = tracks
                    .iter()
                    .map(|(track, stats)| (track.as_str().to_owned(), stats.to_json()))
                    .collect();
                let client = route_client_errors(tracks);
                let client: Map<String, Value> = ClientError::ALL
                    .iter()
                    .zip(client)
                    .map(|(kind, n)| (kind.name().to_owned(), Value::from(n)))
                    .collect();
                (
                    route.as_str().to_owned(),
                    json!({ "tracks": tracks_json, "clientErrors": client }),
                )
            })
            .collect();
        json!({
            "version": version,
            "windowSeconds": self.window_seconds,
            "routes": routes,
        })
    }
}

impl TrackStats {
    fn to_json(&self) -> Value {
        let error_rate = if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        };
        let h = &self.histogram;
        let ms = |us: u64| if h.is_empty() { 0.0 } else { us as f64 / 1000.0 };
        let [s2, s3, s4, s5] = self.status_classes;
        let [connect, timeout, reset, protocol] = self.upstream_errors;
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "errorRate": error_rate,
            "statusClasses": {"2xx": s2, "3xx": s3, "4xx": s4, "5xx": s5},
            "upstreamErrors": {"connect": connect, "timeout": timeout, "reset": reset, "protocol": protocol},
            "latencyMs": {
                "p50": ms(h.value_at_quantile(0.5)),
                "p90": ms(h.value_at_quantile(0.9)),
                "p99": ms(h.value_at_quantile(0.99)),
                "p999": ms(h.value_at_quantile(0.999)),
                "max": ms(h.max()),
            },
            "histogram": encode_histogram(h),
        })
    }
}

/// A histogram as HdrHistogram's compressed V2 format (`V2DeflateSerializer`, readable by every
/// HdrHistogram implementation), base64 with the standard alphabet and padding.
///
/// Deflate rather than plain V2 because it is a third smaller where size matters: ≈ 4.0 KB against
/// ≈ 6.0 KB for 100 000 requests spread over ≈ 5 500 buckets. For a histogram of a handful of
/// buckets it costs ≈ 12 bytes more.
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Writing to a Vec cannot fail, and a count is only unserializable above i64::MAX requests.
    if let Err(e) = V2DeflateSerializer::new().serialize(h, &mut bytes) {
        unreachable!("a latency histogram serializes into memory: {e:?}");
    }
    STANDARD.encode(bytes)
}

/// Why a `histogram` field could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeHistogramError {
    /// The text is not standard base64 with padding.
    #[error("histogram is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The bytes are not an HdrHistogram V2 (plain or deflate) histogram with u64 counts.
    #[error("histogram is not an HdrHistogram V2 encoding: {0}")]
    Format(#[from] DeserializeError),
}

/// The histogram [`encode_histogram`] encoded (either V2 format is accepted), with its original
/// bounds and counts, ready to `add` to others of the same bounds.
pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, DecodeHistogramError> {
    let bytes = STANDARD.decode(s)?;
    Ok(Deserializer::new().deserialize(&mut bytes.as_slice())?)
}
