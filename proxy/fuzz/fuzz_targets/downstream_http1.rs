//! Writes arbitrary bytes to the proxy's HTTP/1 listener as a client would, and checks what
//! the client gets back and what the upstream receives.
//!
//! Input layout: `[n, a, b, payload…]`. The payload goes to a fresh TCP connection in
//! `1 + n % 3` slices, cut at `a % (len + 1)` and `b % (len + 1)` (sorted), with a pause between
//! slices so that heads and bodies arrive across reads. The client then reads until the proxy
//! closes, 200 ms of silence, or 64 KiB.
//!
//! The proxy (started once per process) routes `/public…` to the tracks `stable` (weight 95)
//! and `canary` (5) and everything else to the route `catch-all`; each track has its own
//! recording upstream. After every input the target checks that:
//! * the proxy stays alive: a fresh `GET /public/health` is answered `200`;
//! * every response the client received parses as HTTP/1.1 with a three-digit status
//!   (skipped when the payload opens with the HTTP/2 preface: the proxy then speaks h2c);
//! * no response carries both `Content-Length` and `Transfer-Encoding`;
//! * every request the upstreams received parses, and none carries both `Content-Length` and
//!   `Transfer-Encoding`, or a `Transfer-Encoding` other than `chunked`;
//! * every path the `/public` tracks received is under `/public` as a whole segment, without
//!   dot segments or percent-encoded dots (switchable: [`CHECK_PATHS`]).

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use switchyard_proxy::Running;
use switchyard_proxy_fuzz::downstream::{self, Received};
use switchyard_proxy_fuzz::upstream::recording::{Record, RecordedRequest, RecordingUpstream};
use switchyard_proxy_fuzz::wire::{self, Bodies};
use switchyard_proxy_fuzz::{TIMEOUTS, runtime, start_proxy};

/// Whether the target checks the paths the `/public` tracks receive ([`check_public_path`]).
///
/// On: the proxy normalizes paths before routing (`switchyard_config::path`, used by
/// `forward`), so `/public/../admin` and `/public/%2e%2e/admin` (seeds `public-dotdot`,
/// `public-pct-dotdot`) no longer reach the `/public` tracks. A build of the proxy without
/// that normalization fails this check on those seeds at once: turn it off for such a build.
const CHECK_PATHS: bool = true;

const HEALTH: &[u8] = b"GET /public/health HTTP/1.1\r\nHost: a\r\n\r\n";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long the target waits for the upstreams to record the requests still under way.
const SETTLE: Duration = Duration::from_millis(300);

struct Harness {
    proxy: Running,
    stable: RecordingUpstream,
    canary: RecordingUpstream,
    catch_all: RecordingUpstream,
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    runtime().block_on(async {
        let bind = || async { RecordingUpstream::bind().await.expect("an upstream binds 127.0.0.1:0") };
        let (stable, canary, catch_all) = (bind().await, bind().await, bind().await);
        let yaml = format!(
            "listen: 127.0.0.1:0\n\
             admin: {{ listen: 127.0.0.1:0 }}\n\
             {TIMEOUTS}\n\
             routes:\n\
             \x20 - name: public\n\
             \x20   match: {{ pathPrefix: /public }}\n\
             \x20   tracks:\n\
             \x20     - {{ name: stable, endpoints: [\"{}\"], weight: 95 }}\n\
             \x20     - {{ name: canary, endpoints: [\"{}\"], weight: 5 }}\n\
             \x20 - name: catch-all\n\
             \x20   match: {{ pathPrefix: / }}\n\
             \x20   tracks:\n\
             \x20     - {{ name: stable, endpoints: [\"{}\"], weight: 100 }}\n",
            stable.addr, canary.addr, catch_all.addr
        );
        Harness {
            proxy: start_proxy(&yaml).await,
            stable,
            canary,
            catch_all,
        }
    })
});

fuzz_target!(|data: &[u8]| {
    let Some((payload, slices)) = slices(data) else {
        return;
    };
    let h = &*HARNESS;
    let listener = h.proxy.listen[0];
    runtime().block_on(async {
        let received = downstream::exchange(listener, &slices).await;
        if !payload.starts_with(H2_PREFACE) {
            check_responses(&received, memchr::memmem::find(payload, b"HTTP/1.0").is_some());
        }
        check_alive(downstream::status_of(listener, HEALTH).await);
        for (track, upstream, public) in [
            ("public/stable", &h.stable, true),
            ("public/canary", &h.canary, true),
            ("catch-all/stable", &h.catch_all, false),
        ] {
            // Requests whose downstream went away end once the proxy lets go of them.
            upstream.settled(SETTLE).await;
            for record in upstream.take() {
                let request = check_parses(track, record);
                check_request_framing(track, &request);
                if public && CHECK_PATHS {
                    check_public_path(track, &request);
                }
            }
        }
    });
});

/// The payload and its slices, or `None` for an input shorter than its three control bytes.
fn slices(data: &[u8]) -> Option<(&[u8], Vec<&[u8]>)> {
    let [n, a, b, payload @ ..] = data else {
        return None;
    };
    let len = payload.len();
    let mut cuts = [usize::from(*a) % (len + 1), usize::from(*b) % (len + 1)];
    cuts.sort_unstable();
    let slices = match n % 3 {
        0 => vec![payload],
        1 => vec![&payload[..cuts[0]], &payload[cuts[0]..]],
        _ => vec![&payload[..cuts[0]], &payload[cuts[0]..cuts[1]], &payload[cuts[1]..]],
    };
    Some((payload, slices.into_iter().filter(|s| !s.is_empty()).collect()))
}

/// Every response the client received parses as HTTP/1.1 with a three-digit status, and none
/// carries both `Content-Length` and `Transfer-Encoding`.
///
/// `HTTP/1.0` is taken too when the client spoke it (`http10`): hyper answers a peer that sent
/// an HTTP/1.0 request in HTTP/1.0 on purpose (`Conn::enforce_version`), which RFC 9110 §2.5
/// allows.
fn check_responses(received: &Received, http10: bool) {
    let shown = || {
        format!(
            "{:?} (then {:?})",
            String::from_utf8_lossy(&received.bytes),
            received.end
        )
    };
    // The client may have sent HEAD or CONNECT: an answer's body may be absent.
    let heads = match wire::responses(&received.bytes, Bodies::MaybeNone) {
        Ok(heads) => heads,
        Err(e) => panic!(
            "the client received a malformed response at byte {}: {}\n{}",
            e.at,
            e.why,
            shown()
        ),
    };
    for head in &heads {
        assert!(
            (head.minor_version == 1 || http10) && (100..=999).contains(&head.status),
            "the client received a response that is not HTTP/1.1 with a 3-digit status: HTTP/1.{} {}\n{}",
            head.minor_version,
            head.status,
            shown()
        );
        assert!(
            !(head.headers.has("content-length") && head.headers.has("transfer-encoding")),
            "the client received a response with both content-length and transfer-encoding\n{}",
            shown()
        );
    }
}

/// The proxy answers a fresh well-formed request `200`.
fn check_alive(status: Result<u16, String>) {
    assert_eq!(
        status,
        Ok(200),
        "the proxy no longer answers GET /public/health with 200"
    );
}

/// What the proxy sent upstream parses as an HTTP/1.1 request.
fn check_parses(track: &str, record: Record) -> RecordedRequest {
    match record {
        Record::Request(request) => {
            assert_eq!(
                request.minor_version, 1,
                "{track} received a request that is not HTTP/1.1: {request:?}"
            );
            request
        }
        Record::Unparsable { why, bytes } => panic!(
            "{track} received bytes that are not an HTTP/1.1 request ({why}): {:?}",
            String::from_utf8_lossy(&bytes)
        ),
    }
}

/// No request forwarded upstream carries both `Content-Length` and `Transfer-Encoding`, or a
/// `Transfer-Encoding` other than `chunked`.
fn check_request_framing(track: &str, request: &RecordedRequest) {
    if let Some(why) = wire::request_framing_violation(&request.headers) {
        panic!("{track} received a request with {why}: {request:?}");
    }
}

/// Every path the `/public` route's tracks receive is `/public` or under `/public/`, has no
/// `.` or `..` segment, and no percent-encoded dot (`%2e`, `%2E`): what a normalizing proxy
/// matched is what the upstream serves.
fn check_public_path(track: &str, request: &RecordedRequest) {
    let path = request.target.split(['?', '#']).next().unwrap_or_default();
    let under_public = path
        .strip_prefix("/public")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    let dot_segment = path.split('/').any(|s| s == "." || s == "..");
    let encoded_dot = path.to_ascii_lowercase().contains("%2e");
    assert!(
        under_public && !dot_segment && !encoded_dot,
        "{track} received the path {path:?}, not a normalized path under /public: {request:?}"
    );
}
