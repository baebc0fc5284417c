use std::collections::HashSet;

use switchyard_config::{Format, load_routes};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::publish::NewRoutes;
use crate::publish::state_file::{RoutesDigest, TableSource};
use crate::record::Recorder;

const TABLE: &str = r#"
routes:
  - name: app
    tracks:
      - { name: stable, weight: 1, endpoints: ["app.svc:8080"] }
"#;

const TWO_NAMES: &str = r#"
routes:
  - name: app
    tracks:
      - { name: stable, weight: 9, endpoints: ["app.svc:8080"] }
      - { name: canary, weight: 1, endpoints: ["canary.svc:9000"] }
"#;

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

/// A lookup the test answers (or leaves unanswered, to time out).
struct Asked {
    host: String,
    at: Instant,
    reply: oneshot::Sender<io::Result<Vec<IpAddr>>>,
}

impl Asked {
    fn answer(self, answer: io::Result<Vec<IpAddr>>) {
        let _ = self.reply.send(answer);
    }
}

/// A resolver whose every lookup is handed to the test.
struct Scripted(mpsc::UnboundedSender<Asked>);

impl Resolve for Scripted {
    fn lookup(&self, host: &str) -> Lookup {
        let (reply, answer) = oneshot::channel();
        let _ = self.0.send(Asked {
            host: host.to_owned(),
            at: Instant::now(),
            reply,
        });
        // A question left unanswered stays unanswered, until the stage's timeout.
        Box::pin(async move {
            match answer.await {
                Ok(answer) => answer,
                Err(_) => std::future::pending().await,
            }
        })
    }
}

fn publisher(yaml: &str) -> Arc<Publisher> {
    let table = load_routes(yaml, Format::Yaml, 1).unwrap();
    let digest = RoutesDigest::of(table.spec());
    let recorder = Arc::new(Recorder::new(2, Instant::now()));
    Arc::new(Publisher::new(table, TableSource::ConfigFile, recorder, None, digest))
}

fn stage(refresh: Duration, timeout: Duration) -> (Resolver, Arc<Names>, mpsc::UnboundedReceiver<Asked>) {
    let (ask, asked) = mpsc::unbounded_channel();
    let names = Arc::new(Names::default());
    let spec = DnsSpec {
        refresh,
        timeout,
        family: AddressFamily::V4Preferred,
    };
    (
        Resolver::new(Arc::new(Scripted(ask)), spec, Arc::clone(&names)),
        names,
        asked,
    )
}

/// The addresses of `track`'s endpoints in the snapshot in force.
fn endpoints(p: &Publisher, track: &str) -> Vec<String> {
    let snapshot = p.load();
    let route = snapshot.table.route("app").unwrap();
    let track = route.track(track).unwrap();
    let plan = snapshot.plan(route.index(), track.index());
    let keys: HashSet<_> = plan.endpoints.iter().map(|(_, key)| *key).collect();
    assert_eq!(keys.len(), plan.endpoints.len(), "every endpoint has its own pool key");
    plan.endpoints.iter().map(|(a, _)| a.as_str().to_owned()).collect()
}

/// Runs the first round, answering `app.svc` with `answer`.
async fn first_round(resolver: &Resolver, p: &Publisher, asked: &mut mpsc::UnboundedReceiver<Asked>, answer: &[&str]) {
    let answering = async {
        let a = asked.recv().await.unwrap();
        assert_eq!(a.host, "app.svc");
        a.answer(Ok(ips(answer)));
    };
    tokio::join!(resolver.first(p), answering);
}

#[test]
fn the_family_chooses_the_addresses() {
    let answer = ips(&["fd00::1", "10.0.0.2", "10.0.0.1", "10.0.0.2"]);
    let only_v6 = ips(&["fd00::2", "fd00::1"]);
    assert_eq!(
        select(AddressFamily::V4Preferred, &answer),
        Ok(ips(&["10.0.0.1", "10.0.0.2"]))
    );
    assert_eq!(
        select(AddressFamily::V4Preferred, &only_v6),
        Ok(ips(&["fd00::1", "fd00::2"]))
    );
    assert_eq!(
        select(AddressFamily::All, &answer),
        Ok(ips(&["10.0.0.1", "10.0.0.2", "fd00::1"]))
    );
    assert_eq!(select(AddressFamily::V6, &answer), Ok(ips(&["fd00::1"])));
    assert_eq!(select(AddressFamily::V4, &only_v6), Err(LookupError::NoAddress("v4")));
    assert_eq!(
        select(AddressFamily::V4, &only_v6).unwrap_err().to_string(),
        "the answer has no address that dns.family (v4) takes"
    );
}

#[test]
fn a_failed_lookup_keeps_the_last_addresses_and_is_reported() {
    let names = Names::default();
    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    assert!(names.record("app.svc", Ok(ips(&["10.0.0.1"])), at(100)));
    assert!(
        !names.record("app.svc", Ok(ips(&["10.0.0.1"])), at(105)),
        "the same addresses"
    );
    let down = || Err(LookupError::Failed("no server answered".to_owned()));
    assert!(!names.record("app.svc", down(), at(110)));
    assert!(!names.record("app.svc", Err(LookupError::TimedOut(Duration::from_secs(5))), at(115)));
    assert_eq!(names.addresses().get("app.svc"), Some(&*ips(&["10.0.0.1"])));
    let status = &names.report()["app.svc"];
    assert_eq!(status.addresses, ips(&["10.0.0.1"]));
    assert_eq!(status.resolved_at, Some(105_000));
    assert_eq!(status.error.as_deref(), Some("no answer within 5s"));
    assert_eq!(
        status.failing_since,
        Some(110_000),
        "since the first failure of the run"
    );
    assert_eq!(status.failures, 2);

    assert!(names.record("app.svc", Ok(ips(&["10.0.0.2"])), at(120)));
    let status = &names.report()["app.svc"];
    assert_eq!((status.error.as_ref(), status.failing_since), (None, None));
    assert_eq!((status.resolved_at, status.failures), (Some(120_000), 2));

    // A name that never resolved has no addresses to serve, and says so.
    assert!(!names.record("gone.svc", down(), at(130)));
    assert_eq!(names.addresses().get("gone.svc"), None);
    let status = &names.report()["gone.svc"];
    assert_eq!((status.addresses.len(), status.resolved_at), (0, None));
    assert_eq!(status.error.as_deref(), Some("the lookup failed: no server answered"));

    names.retain(&BTreeSet::from(["gone.svc"]));
    assert!(!names.knows("app.svc") && names.knows("gone.svc"));
}

/// Rounds come `refresh` after the last one ended; a failing or silent lookup keeps the last
/// addresses; a new answer is served at the same version, with the routes as written unchanged.
async fn refreshes_every(refresh: Duration) {
    let timeout = Duration::from_secs(2);
    let p = publisher(TABLE);
    let (resolver, names, mut asked) = stage(refresh, timeout);
    let start = Instant::now();
    assert_eq!(endpoints(&p, "stable"), ["app.svc:8080"], "unresolved, as written");
    first_round(&resolver, &p, &mut asked, &["10.0.0.1"]).await;
    assert_eq!(endpoints(&p, "stable"), ["10.0.0.1:8080"]);
    let written = p.load().table.spec().to_vec();
    let (stop, stopped) = watch::channel(false);
    let task = resolver.spawn(Arc::clone(&p), stopped);

    let a = asked.recv().await.unwrap();
    assert_eq!(a.at - start, refresh);
    a.answer(Err(io::Error::other("no server answered")));

    // Each question comes once the round before it has ended, and what it did is in force.
    let a = asked.recv().await.unwrap();
    assert_eq!(a.at - start, 2 * refresh);
    assert_eq!(
        endpoints(&p, "stable"),
        ["10.0.0.1:8080"],
        "the last addresses are kept"
    );
    let status = &names.report()["app.svc"];
    assert_eq!(status.addresses, ips(&["10.0.0.1"]));
    assert_eq!(status.error.as_deref(), Some("the lookup failed: no server answered"));
    a.answer(Ok(ips(&["10.0.0.2", "10.0.0.1"])));

    let a = asked.recv().await.unwrap();
    assert_eq!(a.at - start, 3 * refresh);
    assert_eq!(endpoints(&p, "stable"), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    assert_eq!(p.load().table.version(), 1, "the same table, served with new addresses");
    assert_eq!(p.load().table.spec(), written);
    assert_eq!(names.report()["app.svc"].error, None);
    drop(a);

    let a = asked.recv().await.unwrap();
    assert_eq!(
        a.at - start,
        4 * refresh + timeout,
        "the silent lookup was given up after the timeout"
    );
    assert_eq!(endpoints(&p, "stable"), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    let status = &names.report()["app.svc"];
    assert_eq!(
        (status.error.as_deref(), status.failures),
        (Some("no answer within 2s"), 2)
    );
    a.answer(Ok(ips(&["10.0.0.2"])));

    let a = asked.recv().await.unwrap();
    assert_eq!(endpoints(&p, "stable"), ["10.0.0.2:8080"]);
    drop(a);
    let _ = stop.send(true);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn names_are_looked_up_again_every_second() {
    refreshes_every(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn names_are_looked_up_again_every_minute() {
    refreshes_every(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn a_published_table_has_only_its_new_names_looked_up_at_once() {
    let refresh = Duration::from_secs(5);
    let p = publisher(TABLE);
    let (resolver, names, mut asked) = stage(refresh, Duration::from_secs(1));
    let start = Instant::now();
    first_round(&resolver, &p, &mut asked, &["10.0.0.1"]).await;
    let (stop, stopped) = watch::channel(false);
    let task = resolver.spawn(Arc::clone(&p), stopped);

    let version = p
        .publish(NewRoutes::Document(TWO_NAMES, Format::Yaml), None)
        .await
        .unwrap();
    // Served at once: the known name by its addresses, the new one as written until it resolves.
    assert_eq!(endpoints(&p, "stable"), ["10.0.0.1:8080"]);
    assert_eq!(endpoints(&p, "canary"), ["canary.svc:9000"]);
    let a = asked.recv().await.unwrap();
    assert_eq!((a.host.as_str(), a.at), ("canary.svc", start));
    a.answer(Ok(ips(&["10.1.0.1"])));

    // The refresh keeps its time, and then asks for every name.
    let mut round = [asked.recv().await.unwrap(), asked.recv().await.unwrap()];
    round.sort_by(|a, b| a.host.cmp(&b.host));
    assert_eq!(
        round.each_ref().map(|a| (a.host.as_str(), a.at - start)),
        [("app.svc", refresh), ("canary.svc", refresh)]
    );
    assert_eq!(endpoints(&p, "canary"), ["10.1.0.1:9000"]);
    assert_eq!(p.load().table.version(), version);
    assert!(names.knows("canary.svc"));
    let _ = stop.send(true);
    task.await.unwrap();
}
