//! The tests' SigV4 signer (header form, as botocore's `SigV4Auth` signs):
//! what a client of the loopback ECS API does. It lives with the tests,
//! not in the crate, because the warden only ever verifies; and written
//! apart from `api::sigv4::verify`, it cannot share a mistake with it.
//!
//! 1. Canonical request: the method; the path, percent-encoded but for
//!    `A-Za-z0-9-_.~/`; the query's pairs (given unencoded), encoded and
//!    sorted; every header given, with its name lowercased and its value
//!    trimmed and inner white space collapsed, sorted by name; the `;`
//!    list of their names; hex SHA-256 of the body.
//! 2. String to sign: algorithm, `X-Amz-Date`, scope
//!    (`DATE/REGION/ecs/aws4_request`), hex SHA-256 of step 1.
//! 3. Key: HMAC chain over date, region, service, `aws4_request`, starting
//!    from `AWS4` + the secret; the signature is HMAC(key, step 2) in hex.

use std::time::SystemTime;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use ecs_warden::api::credentials::Credentials;

const SERVICE: &str = "ecs";

/// The `Authorization` and `X-Amz-Date` headers for a request with
/// `headers` (which must include `Host`), signed at `now`.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    creds: &Credentials,
    region: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    // 20240102T030405Z from 2024-01-02T03:04:05Z.
    let amz_date: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let mut signed: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("x-amz-date"))
        .map(|(k, v)| {
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.to_ascii_lowercase(), v)
        })
        .collect();
    signed.push(("x-amz-date".into(), amz_date.clone()));
    signed.sort();
    let names: Vec<&str> = signed.iter().map(|(k, _)| k.as_str()).collect();
    let names = names.join(";");

    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(k, b""), encode(v, b""))
        })
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut canonical = format!("{method}\n{}\n{}\n", encode(path, b"/"), query.join("&"));
    for (k, v) in &signed {
        canonical.push_str(&format!("{k}:{v}\n"));
    }
    canonical.push_str(&format!("\n{names}\n{}", hex(&Sha256::digest(body))));

    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{SERVICE}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{}", creds.secret_access_key).into_bytes();
    for part in [date, region, SERVICE, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    vec![
        (
            "Authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={names}, Signature={signature}",
                creds.access_key_id
            ),
        ),
        ("X-Amz-Date".into(), amz_date),
    ]
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encode all but `A-Za-z0-9-_.~` and `keep`.
fn encode(s: &str, keep: &[u8]) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || keep.contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
