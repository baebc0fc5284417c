use switchyard_config::load_config;
use switchyard_testkit::Scratch;

use super::*;

const ROUTES: &str = "
# the checkout service
routes:
  - name: checkout
    tracks:
      - { name: stable, endpoints: ['127.0.0.1:9001'], weight: 95 }
      - { name: canary, endpoints: ['127.0.0.1:9002'], weight: 5 }
";

fn routes(text: &str) -> Vec<RouteSpec> {
    load_config(text, Format::sniff(text), 1).unwrap().config.routes
}

fn table(text: &str, version: u64) -> RoutingTable {
    load_config(text, Format::sniff(text), version).unwrap().table
}

#[test]
fn the_digest_sees_what_routes_do_not_how_the_file_is_written() {
    let same_as_json = r#"{"routes": [{"tracks": [
        {"weight": 95, "endpoints": ["127.0.0.1:9001"], "name": "stable"},
        {"name": "canary", "weight": 5.0, "endpoints": [{"address": "127.0.0.1:9002"}]}
    ], "name": "checkout"}]}"#;
    let digest = RoutesDigest::of(&routes(ROUTES));
    assert_eq!(RoutesDigest::of(&routes(same_as_json)), digest);
    assert!(
        digest.0.starts_with("xxh3-128:") && digest.0.len() == 9 + 32,
        "{digest:?}"
    );
    let moved = ROUTES.replace("weight: 5 ", "weight: 6 ");
    assert_ne!(RoutesDigest::of(&routes(&moved)), digest);
    assert_ne!(RoutesDigest::of(&[]), digest);
}

#[test]
fn a_document_reads_back_as_the_table_it_keeps() {
    let kept = table(ROUTES, 7);
    let digest = RoutesDigest::of(&routes(ROUTES));
    let document = StateDocument::new(&kept, TableSource::AdminApi, digest.clone());
    let bytes = document.to_bytes();
    let text = std::str::from_utf8(&bytes).unwrap();
    for field in [
        "\"format\": 1",
        "\"version\": 7",
        "\"source\": \"adminApi\"",
        "\"configRoutesDigest\": \"xxh3-128:",
    ] {
        assert!(text.contains(field), "{field} in\n{text}");
    }
    let read = StateDocument::parse(&bytes, Path::new("s.json")).unwrap();
    assert_eq!(read, document);
    let again = read.table().unwrap();
    assert_eq!((again.version(), again.spec()), (7, kept.spec()));
}

#[test]
fn what_is_not_a_state_document_is_refused_in_a_sentence() {
    let good = StateDocument::new(&table(ROUTES, 3), TableSource::ConfigFile, RoutesDigest::of(&[])).to_bytes();
    let torn = &good[..good.len() / 2];
    let mut extra: serde_json::Value = serde_json::from_slice(&good).unwrap();
    extra["note"] = "hand-edited".into();
    let mut later: serde_json::Value = serde_json::from_slice(&good).unwrap();
    later["format"] = 2.into();
    let cases: [(&[u8], &str); 6] = [
        (
            b"",
            "the state file /s.json is not a valid state document (EOF while parsing",
        ),
        (
            b"\x00\x17garbage",
            "the state file /s.json is not a valid state document (expected value",
        ),
        (
            torn,
            "the state file /s.json is not a valid state document (EOF while parsing",
        ),
        (b"{\"format\": 1, \"version\": 3}", "(missing field `source`"),
        (&serde_json::to_vec(&extra).unwrap(), "(unknown field `note`"),
        (
            &serde_json::to_vec(&later).unwrap(),
            "the state file /s.json is of format 2, and this proxy reads format 1",
        ),
    ];
    for (bytes, message) in cases {
        let e = StateDocument::parse(bytes, Path::new("/s.json")).unwrap_err();
        assert!(e.to_string().contains(message), "{e}\nwanted {message}");
    }
}

#[test]
fn the_stored_table_is_served_only_over_the_routes_it_was_published_over() {
    let file_routes = RoutesDigest::of(&routes(ROUTES));
    let stored = |digest: &RoutesDigest| {
        let aborted = ROUTES
            .replace("weight: 95", "weight: 100")
            .replace("weight: 5 ", "weight: 0 ");
        Ok(Some(StateDocument::new(
            &table(&aborted, 9),
            TableSource::AdminApi,
            digest.clone(),
        )))
    };
    match restore(stored(&file_routes), &file_routes) {
        Restore::Stored { table, source } => {
            assert_eq!((table.version(), source), (9, TableSource::AdminApi));
            assert_eq!(table.spec()[0].tracks[1].weight, 0.0);
        }
        other => panic!("{other:?}"),
    }
    let before_the_edit = RoutesDigest::of(&[]);
    assert!(matches!(
        restore(stored(&before_the_edit), &file_routes),
        Restore::ConfigFile {
            version: 10,
            why: ConfigWins::ConfigEdited { stored: 9 }
        }
    ));
    assert!(matches!(
        restore(Ok(None), &file_routes),
        Restore::ConfigFile {
            version: 1,
            why: ConfigWins::NoStateFile
        }
    ));
    let unreadable = StateDocument::parse(b"{", Path::new("s.json"));
    assert!(matches!(
        restore(unreadable.map(Some), &file_routes),
        Restore::ConfigFile {
            version: 1,
            why: ConfigWins::Unusable(StateError::Malformed { .. })
        }
    ));
    let mut invalid = stored(&file_routes).unwrap().unwrap();
    invalid.routes[0]["tracks"][0]["weight"] = (-1).into();
    match restore(Ok(Some(invalid)), &file_routes) {
        Restore::ConfigFile {
            version: 10,
            why: ConfigWins::InvalidTable { stored: 9, problems },
        } => assert!(
            problems.to_string().contains("routes[0].tracks[0].weight"),
            "{problems}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_save_replaces_the_file_whole_and_leaves_only_it_and_its_lock() {
    let dir = Scratch::new("state-file-save");
    let state = StateFile::new(dir.join("proxy.yaml.state.json"));
    assert!(state.read().unwrap().is_none());
    for version in [4, 5] {
        let document = StateDocument::new(&table(ROUTES, version), TableSource::AdminApi, RoutesDigest::of(&[]));
        state.save(&document).unwrap();
        assert_eq!(state.read().unwrap(), Some(document));
    }
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["proxy.yaml.state.json", "proxy.yaml.state.json.lock"]);
    state.remove().unwrap();
    state.remove().unwrap();
    assert!(state.read().unwrap().is_none());
}

#[test]
fn one_state_file_has_one_holder_at_a_time() {
    let dir = Scratch::new("state-file-lock");
    let first = StateFile::new(dir.join("state.json"));
    let second = StateFile::new(dir.join("state.json"));
    first.lock().unwrap();
    first.lock().unwrap();
    let e = second.lock().unwrap_err();
    assert!(matches!(e, StateError::InUse { .. }), "{e}");
    assert!(
        e.to_string().ends_with("give each proxy its own admin.stateFile"),
        "{e}"
    );
    let document = StateDocument::new(&table(ROUTES, 2), TableSource::AdminApi, RoutesDigest::of(&[]));
    assert!(matches!(second.save(&document), Err(StateError::InUse { .. })));
    drop(first);
    second.save(&document).unwrap();
}

#[test]
fn a_save_that_cannot_be_made_says_where_and_what_to_do() {
    let dir = Scratch::new("state-file-missing");
    let state = StateFile::new(dir.join("missing/state.json"));
    let document = StateDocument::new(&table(ROUTES, 2), TableSource::AdminApi, RoutesDigest::of(&[]));
    let e = state.save(&document).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "cannot write the state file {}/missing/state.json: ",
            dir.path().display()
        )),
        "{e}"
    );
    assert!(e.contains("No such file or directory"), "{e}");
    assert!(
        e.ends_with("or point admin.stateFile (or --state-file) elsewhere"),
        "{e}"
    );
    assert!(!dir.join("missing").exists());
}

#[test]
fn the_flag_beats_the_setting_and_the_default_sits_beside_the_config_file() {
    let config = Some(Path::new("/etc/switchyard/proxy.yaml"));
    let beside = Some((PathBuf::from("/etc/switchyard/proxy.yaml.state.json"), false));
    let chosen = |p: &str| Some((PathBuf::from(p), true));
    let path = StateFileSpec::Path("/var/lib/s.json".to_owned());
    assert_eq!(location(&StateFileSpec::BesideConfig, None, config), beside);
    assert_eq!(location(&StateFileSpec::BesideConfig, None, None), None);
    assert_eq!(location(&path, None, config), chosen("/var/lib/s.json"));
    assert_eq!(location(&StateFileSpec::Off, None, config), None);
    for setting in [&StateFileSpec::BesideConfig, &path, &StateFileSpec::Off] {
        assert_eq!(location(setting, Some(Path::new("s.json")), config), chosen("s.json"));
    }
}
