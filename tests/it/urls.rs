//! Update URLs through the real binaries and real loopback servers: the
//! host the source rules check is the host ureq connects to; relative build
//! URLs resolve as RFC 3986 says; every hop of a redirect (manifest, build,
//! the size probe of an agent's stage call) passes the same rules before
//! anything connects to it, a download resumes across a redirect, and a
//! redirect loop ends.
//!
//! The refused hops point at 192.0.2.1 (TEST-NET-1, never routed): the
//! tests assert that the refusal comes from the rule (its message), fast,
//! and not from a connection attempt.

use std::fs;
use std::time::{Duration, Instant};

use crate::harness::api;
use crate::harness::server::{entry, Fault, Server};
use crate::harness::*;
use serde_json::{json, Value};

const ART: &str = "/agents/1.1.0";
/// Exit codes (src/exit.rs).
const CONFIG: i32 = 4;
const INVALID: i32 = 13;
const FAILED: i32 = 15;
/// A plain-http host that is not loopback.
const ELSEWHERE: &str = "http://192.0.2.1";

/// A started host whose update source is `source`, with slow connect
/// timeouts (a connection attempt to 192.0.2.1 would show as a hang).
fn host_with_source(source: &str) -> Host {
    let mut host = Host::builder().small().build();
    host.write_config(&[
        ("ECS_WARDEN_UPDATE_SOURCE", source),
        ("ECS_WARDEN_DOWNLOAD_ATTEMPTS", "3"),
        ("ECS_WARDEN_DOWNLOAD_CONNECT_TIMEOUT", "30s"),
    ]);
    host.start();
    host.wait_agent("1.0.0");
    host
}

/// A stamped 1.1.0 under the host's `srv/`; its bytes.
fn build_110(host: &Host) -> Vec<u8> {
    let p = host.stamp_small("1.1.0", None, &host.path("srv/1.1.0"));
    fs::read(p).unwrap()
}

/// Serve a manifest at `path` listing 1.1.0 at `url` (as written).
fn manifest_at(srv: &Server, path: &str, bytes: &[u8], url: &str) {
    let doc = json!({"schemaVersion": 1, "agents": [entry("1.1.0", bytes, url)]});
    srv.file(path, serde_json::to_vec(&doc).unwrap());
}

/// `stage --json` succeeded: the update document.
fn staged(host: &Host) -> Value {
    let ran = host.run(&["stage", "--json"]);
    assert_eq!(ran.code, 0, "{ran:?}\nlog:\n{}", host.log());
    let u = ran.json();
    assert_eq!(u["state"], "STAGED", "{u:#}");
    u
}

/// `ran` was refused as an invalid parameter whose message has every one
/// of `needles`; the refusal is in `status` too; 1.0.0 still runs.
fn assert_invalid(host: &Host, ran: &Ran, needles: &[&str]) {
    assert_eq!(
        ran.code,
        INVALID,
        "exit code: {ran:?}\nlog:\n{}",
        host.log()
    );
    assert!(ran.stderr.contains("InvalidParameterException"), "{ran:?}");
    let u = host.update_doc();
    assert_eq!(
        u["lastRefusal"]["name"], "InvalidParameterException",
        "{u:#}"
    );
    let msg = u["lastRefusal"]["message"].as_str().unwrap_or("");
    for n in needles {
        assert!(msg.contains(n), "refusal {msg:?} lacks {n:?}");
    }
    assert!(host.journal().is_none(), "no update was recorded");
    assert_eq!(host.agent_version().as_deref(), Some("1.0.0"));
}

/// The update FAILED in the download with a message that has every one of
/// `needles`, and 1.0.0 runs untouched.
fn assert_download_failed(host: &Host, u: &Value, needles: &[&str]) {
    assert_eq!(u["state"], "FAILED", "{u:#}");
    assert_eq!(u["error"]["reason"], "download", "{u:#}");
    let msg = u["error"]["message"].as_str().unwrap_or("");
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} lacks {n:?}");
    }
    host.assert_intact("1.0.0");
}

// ----- the host that is checked is the host connected to ---------------------

/// `http://evil.example\@localhost/m`: a split on `@` sees localhost, the
/// URL parser (and ureq) sees evil.example with the path `/@localhost/m`.
/// Refused everywhere a URL enters, naming the host ureq would use. Where
/// a regression would make a request, the host is 192.0.2.1 instead (no
/// DNS lookup, never routed).
#[test]
fn a_backslash_does_not_make_a_host_loopback() {
    let evil = "http://evil.example\\@localhost/m";
    let evil_ip = "http://192.0.2.1\\@localhost/m";
    let srv = Server::start();
    let mut host = Host::builder().small().build();

    // The configured source: a config error (exit 4) naming the key.
    host.write_config(&[("ECS_WARDEN_UPDATE_SOURCE", evil)]);
    let out = host.cli(&["pre-start"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(CONFIG), "{err}");
    assert!(err.contains("ECS_WARDEN_UPDATE_SOURCE"), "{err}");
    assert!(
        err.contains("plain http to evil.example is refused"),
        "names the host ureq would use: {err}"
    );

    host.write_config(&[("ECS_WARDEN_UPDATE_SOURCE", &srv.url("/manifest.json"))]);
    host.start();
    host.wait_agent("1.0.0");

    // A source on the command line.
    let ran = host.run(&["update", "--source", evil_ip]);
    assert_invalid(&host, &ran, &["plain http to 192.0.2.1 is refused"]);

    // A build URL in a manifest.
    let bytes = build_110(&host);
    let evil_build = format!("http://192.0.2.1\\@127.0.0.1:{}{ART}", srv.port);
    manifest_at(&srv, "/manifest.json", &bytes, &evil_build);
    srv.file(ART, bytes.clone());
    let ran = host.run(&["update"]);
    assert_invalid(
        &host,
        &ran,
        &["build URL", "plain http to 192.0.2.1 is refused"],
    );
    assert!(srv.seen_at(ART).is_empty(), "nothing fetched the build");

    // The agent's stage call.
    let r = api::control(
        &host,
        "POST",
        "/v1/agent/stage",
        Some(&json!({"location": evil_ip, "signature": sha256_fast(&bytes)})),
    );
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(r.status, 400, "{body}");
    assert_eq!(body["__type"], "InvalidParameterException", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("plain http to 192.0.2.1"), "{msg}");
    assert!(host.journal().is_none(), "no update was recorded");
}

// ----- relative build URLs ------------------------------------------------------

/// A source without a path: `agent` is on its root, not a host `agent`.
#[test]
fn a_build_url_relative_to_a_source_without_a_path() {
    let srv = Server::start();
    let host = host_with_source(&format!("http://127.0.0.1:{}", srv.port));
    let bytes = build_110(&host);
    manifest_at(&srv, "/", &bytes, "agent-1.1.0");
    srv.file("/agent-1.1.0", bytes);
    staged(&host);
    assert_eq!(srv.seen_at("/agent-1.1.0").len(), 1, "{:?}", srv.seen());
}

/// A query with slashes (a presigned URL) is not part of the directory.
#[test]
fn a_build_url_relative_to_a_source_with_a_query() {
    let srv = Server::start();
    let host = host_with_source(&srv.url("/dir/manifest.json?X-Amz-Credential=a/b/c"));
    let bytes = build_110(&host);
    manifest_at(&srv, "/dir/manifest.json", &bytes, "agent-1.1.0");
    srv.file("/dir/agent-1.1.0", bytes);
    staged(&host);
    assert_eq!(srv.seen_at("/dir/agent-1.1.0").len(), 1, "{:?}", srv.seen());
}

/// `//HOST:PORT/path`: the manifest's scheme, another server.
#[test]
fn a_network_path_build_url_goes_to_the_other_server() {
    let (srv, cdn) = (Server::start(), Server::start());
    let host = host_with_source(&srv.url("/manifest.json"));
    let bytes = build_110(&host);
    let url = format!("//127.0.0.1:{}{ART}", cdn.port);
    manifest_at(&srv, "/manifest.json", &bytes, &url);
    cdn.file(ART, bytes);
    staged(&host);
    assert_eq!(cdn.seen_at(ART).len(), 1, "fetched from the other server");
    assert!(srv.seen_at(ART).is_empty());
}

// ----- redirects ------------------------------------------------------------------

/// Loopback to loopback is followed: a network-path Location to another
/// port, then a relative one there. The build URL is relative to where the
/// manifest came from (the last hop).
#[test]
fn a_manifest_redirect_to_another_loopback_port_is_followed() {
    let (first, second) = (Server::start(), Server::start());
    let host = host_with_source(&first.url("/manifest.json"));
    let bytes = build_110(&host);
    first.route(
        "/manifest.json",
        vec![],
        &[],
        Fault::Redirect(302, format!("//127.0.0.1:{}/v1/manifest.json", second.port)),
    );
    second.route(
        "/v1/manifest.json",
        vec![],
        &[],
        Fault::Redirect(301, "../v2/manifest.json".into()),
    );
    manifest_at(&second, "/v2/manifest.json", &bytes, "agent");
    second.file("/v2/agent", bytes);
    let u = staged(&host);
    assert_eq!(u["target"], "1.1.0");
    let paths: Vec<String> = second.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        ["/v1/manifest.json", "/v2/manifest.json", "/v2/agent"],
        "each hop once, then the build next to the manifest"
    );
    assert_eq!(first.seen().len(), 1);
}

/// A loopback manifest that redirects to plain http elsewhere: refused by
/// the rule, naming the hop, before any connection to it.
#[test]
fn a_manifest_redirect_to_plain_http_elsewhere_is_refused() {
    let srv = Server::start();
    let host = host_with_source(&srv.url("/manifest.json"));
    let to = format!("{ELSEWHERE}/manifest.json");
    srv.route(
        "/manifest.json",
        vec![],
        &[],
        Fault::Redirect(302, to.clone()),
    );
    let t = Instant::now();
    let ran = host.run(&["update"]);
    let took = t.elapsed();
    let hop = srv.url("/manifest.json");
    assert_invalid(
        &host,
        &ran,
        &[
            &hop,
            &format!("the redirect to {to} is refused"),
            "plain http to 192.0.2.1 is refused",
        ],
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(srv.seen_at("/manifest.json").len(), 1);
}

/// A build whose URL redirects to plain http elsewhere: the download fails
/// at once (not retried: the rule will not change its mind).
#[test]
fn a_build_redirect_to_plain_http_elsewhere_fails_the_download() {
    let srv = Server::start();
    let host = host_with_source(&srv.url("/manifest.json"));
    let bytes = build_110(&host);
    manifest_at(&srv, "/manifest.json", &bytes, "agents/1.1.0");
    let to = format!("{ELSEWHERE}{ART}");
    srv.route(ART, bytes, &[], Fault::Redirect(307, to.clone()));
    let t = Instant::now();
    let ran = host.run(&["update", "--json"]);
    let took = t.elapsed();
    assert_eq!(ran.code, FAILED, "{ran:?}\nlog:\n{}", host.log());
    assert_download_failed(
        &host,
        &host.update_doc(),
        &[
            &srv.url(ART),
            &format!("the redirect to {to} is refused"),
            "plain http to 192.0.2.1 is refused",
        ],
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(srv.seen_at(ART).len(), 1, "a refused hop is not retried");
}

/// The build redirects to another loopback server, which cuts the first
/// body short: the retry starts from the first URL again, and the `Range`
/// goes to every hop, so the second server resumes where the body ended.
#[test]
fn a_download_resumes_across_a_redirect() {
    let (srv, cdn) = (Server::start(), Server::start());
    let host = host_with_source(&srv.url("/manifest.json"));
    let bytes = build_110(&host);
    let k = bytes.len() as u64 / 3;
    manifest_at(&srv, "/manifest.json", &bytes, "agents/1.1.0");
    srv.route(ART, vec![], &[], Fault::Redirect(307, cdn.url(ART)));
    cdn.route(ART, bytes, &[Fault::Truncate(k)], Fault::Serve);
    let ran = host.run(&["update", "--json"]);
    assert_eq!(ran.code, 0, "{ran:?}\nlog:\n{}", host.log());
    assert_eq!(ran.json()["state"], "UPDATED");
    let ranges = |s: &Server| -> Vec<Option<String>> {
        s.seen_at(ART).into_iter().map(|s| s.range).collect()
    };
    let expect = vec![None, Some(format!("bytes={k}-"))];
    assert_eq!(ranges(&srv), expect, "each attempt starts at the first URL");
    assert_eq!(ranges(&cdn), expect, "the range reached the last hop");
    host.assert_intact("1.1.0");
}

/// A redirect loop (a relative Location to itself) ends after five hops.
#[test]
fn a_redirect_loop_ends_after_five_hops() {
    let srv = Server::start();
    let host = host_with_source(&srv.url("/manifest.json"));
    srv.route(
        "/manifest.json",
        vec![],
        &[],
        Fault::Redirect(302, "manifest.json".into()),
    );
    let ran = host.run(&["update"]);
    assert_invalid(&host, &ran, &["more than 5 redirects"]);
    assert_eq!(
        srv.seen_at("/manifest.json").len(),
        6,
        "the first request and five redirects"
    );
}

/// The agent's stage call has no size: the warden asks with `HEAD`, and
/// that request follows redirects under the same rules as the download.
#[test]
fn the_size_probe_of_an_agent_stage_follows_redirects_under_the_rules() {
    let (srv, cdn) = (Server::start(), Server::start());
    let host = host_with_source(&srv.url("/manifest.json"));
    let bytes = build_110(&host);
    let sha = sha256_fast(&bytes);
    srv.route(ART, vec![], &[], Fault::Redirect(302, cdn.url(ART)));
    cdn.file(ART, bytes);
    let stage = |location: &str| {
        let r = api::control(
            &host,
            "POST",
            "/v1/agent/stage",
            Some(&json!({"location": location, "signature": sha, "version": "1.1.0"})),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    };

    // Refused: the probe's redirect goes to plain http elsewhere.
    srv.route(
        "/bad",
        vec![],
        &[],
        Fault::Redirect(302, format!("{ELSEWHERE}/a")),
    );
    stage(&srv.url("/bad"));
    let u = host.wait_update_end(Duration::from_secs(30));
    assert_download_failed(&host, &u, &["plain http to 192.0.2.1 is refused"]);
    let methods: Vec<String> = srv.seen_at("/bad").into_iter().map(|s| s.method).collect();
    assert_eq!(methods, ["HEAD"], "refused at the probe, nothing after");

    // Followed: loopback to loopback, for the probe and the download.
    stage(&srv.url(ART));
    api::wait_update_state(&host, "STAGED", Duration::from_secs(30));
    let methods =
        |s: &Server| -> Vec<String> { s.seen_at(ART).into_iter().map(|s| s.method).collect() };
    assert_eq!(methods(&srv), ["HEAD", "GET"]);
    assert_eq!(methods(&cdn), ["HEAD", "GET"]);
}
