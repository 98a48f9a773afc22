//! `api::sigv4::verify` against real botocore, the library under the AWS
//! CLI: botocore reads the warden's credentials file, signs ECS JSON
//! requests, and the warden must accept them (and refuse them once
//! altered).
//!
//! Needs `python3` with botocore. Without it the tests fail when `CI` is
//! set and are skipped (loudly) otherwise.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::harness::botocore_available;
use ecs_warden::api::credentials::{self, Credentials};
use ecs_warden::api::sigv4::{self, AuthError};
use ecs_warden::http::{self, Handler, Limits, Listener, ReadError, Request, Response};

const TARGET: &str = "AmazonEC2ContainerServiceV20141113.UpdateContainerAgent";
const BODY: &str = r#"{"cluster": "default", "containerInstance": "abc"}"#;

/// Run a python script with botocore pointed at `creds_file` and nothing
/// else (no environment keys, no config file, no instance metadata).
fn python(script: &str, creds_file: &Path, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env("AWS_SHARED_CREDENTIALS_FILE", creds_file)
        .env("AWS_CONFIG_FILE", "/nonexistent/ecs-warden-test-config")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_PROFILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, Credentials) {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("etc/ecs-warden/credentials");
    let creds = credentials::load_or_create(&file).unwrap();
    (root, file, creds)
}

/// Sign with `botocore.auth.SigV4Auth` on a `botocore.awsrequest.AWSRequest`
/// and print the prepared request as JSON.
const SIGN: &str = r#"
import json, sys
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

url, region, target, body = sys.argv[1:5]
creds = botocore.session.Session().get_credentials()
if creds is None:
    sys.exit("botocore found no credentials")
req = AWSRequest(method="POST", url=url, data=body.encode(), headers={
    "X-Amz-Target": target,
    "Content-Type": "application/x-amz-json-1.1",
})
SigV4Auth(creds.get_frozen_credentials(), "ecs", region).add_auth(req)
p = req.prepare()
print(json.dumps({
    "method": p.method,
    "url": p.url,
    "headers": [[k, v.decode() if isinstance(v, bytes) else v] for k, v in p.headers.items()],
    "body": p.body.decode() if isinstance(p.body, bytes) else p.body,
    "access_key": creds.access_key,
}))
"#;

#[test]
fn botocore_sigv4auth_request_verifies_and_tampering_is_refused() {
    if !botocore_available("botocore_sigv4auth_request_verifies_and_tampering_is_refused") {
        return;
    }
    let (_root, file, creds) = setup();
    let port = 51679;
    let out = python(
        SIGN,
        &file,
        &[
            &format!("http://127.0.0.1:{port}/"),
            "us-west-2",
            TARGET,
            BODY,
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("python's JSON");
    assert_eq!(
        v["access_key"],
        creds.access_key_id.as_str(),
        "read our file"
    );
    let url = v["url"].as_str().unwrap();
    let rest = url.strip_prefix("http://").unwrap();
    let (host, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    assert_eq!(host, format!("127.0.0.1:{port}"));
    // On the wire urllib3 adds Host, which botocore signed.
    let mut headers = vec![("Host".to_string(), host.to_string())];
    for h in v["headers"].as_array().unwrap() {
        headers.push((
            h[0].as_str().unwrap().to_string(),
            h[1].as_str().unwrap().to_string(),
        ));
    }
    let req = Request {
        method: v["method"].as_str().unwrap().to_string(),
        path: if path.is_empty() { "/" } else { path }.to_string(),
        query: query.to_string(),
        headers,
        body: v["body"].as_str().unwrap().as_bytes().to_vec(),
        tcp: true,
    };
    let authz = req.header("Authorization").unwrap();
    assert!(
        authz.contains("/us-west-2/ecs/aws4_request") && authz.contains("x-amz-target"),
        "{authz}"
    );

    assert_eq!(sigv4::verify(&req, &creds, SystemTime::now()), Ok(()));

    // One body byte changed.
    let mut tampered = req.clone();
    let i = tampered.body.iter().position(|&b| b == b'a').unwrap();
    tampered.body[i] = b'b';
    let err = sigv4::verify(&tampered, &creds, SystemTime::now()).unwrap_err();
    assert!(matches!(err, AuthError::InvalidSignature(_)), "{err:?}");
    assert_eq!(err.name(), "InvalidSignatureException");

    // The target operation changed.
    let mut tampered = req.clone();
    for (k, v) in tampered.headers.iter_mut() {
        if k.eq_ignore_ascii_case("X-Amz-Target") {
            *v = "AmazonEC2ContainerServiceV20141113.DeregisterContainerInstance".into();
        }
    }
    assert!(matches!(
        sigv4::verify(&tampered, &creds, SystemTime::now()),
        Err(AuthError::InvalidSignature(_))
    ));

    // Ten minutes later: expired.
    let later = SystemTime::now() + Duration::from_secs(600);
    assert!(matches!(
        sigv4::verify(&req, &creds, later),
        Err(AuthError::SignatureExpired(_))
    ));

    // Another host's key pair.
    let other = Credentials::generate().unwrap();
    assert_eq!(
        sigv4::verify(&req, &other, SystemTime::now()),
        Err(AuthError::UnrecognizedClient)
    );
}

/// Verifies every request; answers as an ECS JSON endpoint would.
struct Verifier {
    creds: Credentials,
}

impl Handler for Verifier {
    fn handle(&self, req: Request) -> Response {
        let json = |status: u16, value: serde_json::Value| {
            let mut r = Response::json(status, &value);
            r.headers = vec![("Content-Type".into(), "application/x-amz-json-1.1".into())];
            r
        };
        match sigv4::verify(&req, &self.creds, SystemTime::now()) {
            Ok(()) => json(200, serde_json::json!({ "containerInstance": {} })),
            Err(e) => json(
                e.status(),
                serde_json::json!({ "__type": e.name(), "message": e.message() }),
            ),
        }
    }

    fn reject(&self, err: &ReadError) -> Response {
        Response::new(400, "text/plain", err.to_string())
    }
}

/// A real botocore ECS client calling UpdateContainerAgent.
const CALL: &str = r#"
import sys
import botocore, botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, region, mode = sys.argv[1:4]
s = botocore.session.Session()
config = Config(retries={"total_max_attempts": 1})
if mode == "wrong-secret":
    c = s.get_credentials()
    s.set_credentials(c.access_key, "A" * 40)
elif mode == "unsigned":
    config = config.merge(Config(signature_version=botocore.UNSIGNED))
client = s.create_client("ecs", region_name=region, endpoint_url=endpoint, config=config)
try:
    client.update_container_agent(cluster="default", containerInstance="abc")
    print("OK")
except ClientError as e:
    print(e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
"#;

#[test]
fn botocore_ecs_client_over_loopback_tcp() {
    if !botocore_available("botocore_ecs_client_over_loopback_tcp") {
        return;
    }
    let (_root, file, creds) = setup();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    http::serve(
        "sigv4-test",
        Listener::Tcp(listener),
        Limits {
            max_conns: 8,
            max_slow: 1,
            max_body: 64 * 1024,
            request_timeout: Duration::from_secs(10),
        },
        Arc::new(Verifier { creds }),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let call = |region: &str, mode: &str| {
        python(CALL, &file, &[&endpoint, region, mode])
            .trim()
            .to_string()
    };
    assert_eq!(call("us-west-2", "signed"), "OK");
    assert_eq!(call("ap-southeast-2", "signed"), "OK");
    assert_eq!(
        call("us-west-2", "wrong-secret"),
        "InvalidSignatureException 400"
    );
    assert_eq!(
        call("us-west-2", "unsigned"),
        "MissingAuthenticationTokenException 400"
    );
}
