//! Answers a request the proxy forwards with arbitrary bytes, as an upstream would, and checks
//! what the downstream client gets back.
//!
//! Input layout: the whole input is the upstream's answer. Per input, a fresh client connection
//! sends `GET /x HTTP/1.1` through the proxy (started once per process) to a raw upstream that
//! reads the request head, writes the input, and closes. The client reads until the proxy
//! closes, 200 ms of silence, or 64 KiB. The target checks that:
//! * the proxy stays alive: `GET /ok` to a second, well-behaved upstream is answered `200`;
//! * what the client received, if anything, parses as HTTP/1.1 responses with three-digit
//!   statuses (HTTP/1.0 taken while [`REQUIRE_HTTP11`] is off), and holds at most one final
//!   (non-1xx) response: one request, one answer;
//! * no response carries both `Content-Length` and `Transfer-Encoding`.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use switchyard_proxy::Running;
use switchyard_proxy_fuzz::downstream::{self, Received};
use switchyard_proxy_fuzz::upstream::raw::RawUpstream;
use switchyard_proxy_fuzz::upstream::recording::RecordingUpstream;
use switchyard_proxy_fuzz::wire::{self, Bodies};
use switchyard_proxy_fuzz::{TIMEOUTS, runtime, start_proxy};

/// Whether a response to the HTTP/1.1 client must be HTTP/1.1 ([`check_responses`]).
///
/// Off: the proxy forwards the upstream's response version, so an upstream answering
/// `HTTP/1.0 200 OK` reaches the HTTP/1.1 client as `HTTP/1.0 200 OK` (hyper's server writes
/// the version of the `Response` it is given), where RFC 9110 §6.2 says an intermediary MUST
/// send its own version. Reproducer: `artifacts/upstream_response/http10-response-version-forwarded`.
/// While off, `HTTP/1.0` is taken and everything else is still checked; turn it on once the
/// proxy sets the response version.
const REQUIRE_HTTP11: bool = true;

const REQUEST: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
const FOLLOW_UP: &[u8] = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n";

struct Harness {
    proxy: Running,
    raw: RawUpstream,
    /// Behind `/ok`; kept for as long as the proxy forwards to it.
    well_behaved: RecordingUpstream,
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    runtime().block_on(async {
        let raw = RawUpstream::bind().await.expect("an upstream binds 127.0.0.1:0");
        let well_behaved = RecordingUpstream::bind().await.expect("an upstream binds 127.0.0.1:0");
        let yaml = format!(
            "listen: 127.0.0.1:0\n\
             admin: {{ listen: 127.0.0.1:0 }}\n\
             {TIMEOUTS}\n\
             routes:\n\
             \x20 - name: raw\n\
             \x20   match: {{ pathPrefix: /x }}\n\
             \x20   tracks:\n\
             \x20     - {{ name: stable, endpoints: [\"{}\"], weight: 100 }}\n\
             \x20 - name: ok\n\
             \x20   match: {{ pathPrefix: /ok }}\n\
             \x20   tracks:\n\
             \x20     - {{ name: stable, endpoints: [\"{}\"], weight: 100 }}\n",
            raw.addr, well_behaved.addr
        );
        Harness {
            proxy: start_proxy(&yaml).await,
            raw,
            well_behaved,
        }
    })
});

fuzz_target!(|data: &[u8]| {
    let h = &*HARNESS;
    let listener = h.proxy.listen[0];
    h.raw.answer_with(data);
    runtime().block_on(async {
        let received = downstream::exchange(listener, &[REQUEST]).await;
        check_responses(&received);
        check_alive(downstream::status_of(listener, FOLLOW_UP).await);
        // Nothing to check in what `/ok` received; only keep its log from growing.
        drop(h.well_behaved.take());
    });
});

/// What the client received parses as HTTP/1.1 responses with three-digit statuses, at most
/// one of them final, none with both `Content-Length` and `Transfer-Encoding`.
fn check_responses(received: &Received) {
    let shown = || {
        format!(
            "{:?} (then {:?})",
            String::from_utf8_lossy(&received.bytes),
            received.end
        )
    };
    // The client sent one GET: every body is framed as its headers say.
    let heads = match wire::responses(&received.bytes, Bodies::AsFramed) {
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
            (head.minor_version == 1 || !REQUIRE_HTTP11) && (100..=599).contains(&head.status),
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
    let finals = heads.iter().filter(|h| h.status >= 200).count();
    assert!(
        finals <= 1,
        "the client received {finals} final responses to one request\n{}",
        shown()
    );
}

/// The proxy answers a request to the well-behaved upstream `200`.
fn check_alive(status: Result<u16, String>) {
    assert_eq!(status, Ok(200), "the proxy no longer answers GET /ok with 200");
}
