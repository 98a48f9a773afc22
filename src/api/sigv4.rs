//! AWS Signature Version 4, header form, for the loopback ECS API.
//!
//! `verify` checks a request the way an AWS JSON-protocol service does:
//! `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/ecs/aws4_request,
//! SignedHeaders=..., Signature=...` plus an `X-Amz-Date` header
//! (`YYYYMMDDTHHMMSSZ`, within 5 minutes of now). Any region is accepted:
//! it comes from the credential scope. `sign` (unit tests only) makes the
//! same two headers.
//!
//! The canonical request follows the AWS specification as botocore builds
//! it for non-S3 services (`botocore.auth.SigV4Auth`):
//! - method;
//! - path: dot segments and empty segments removed
//!   (`botocore.utils.remove_dot_segments`), then percent-encoded with only
//!   `A-Za-z0-9-_.~/` left as is (so an already-encoded path is encoded a
//!   second time, as AWS specifies for every service but S3);
//! - query: every `name=value` pair percent-decoded, re-encoded with only
//!   `A-Za-z0-9-_.~` left as is, sorted by name then value, joined by `&`;
//! - the signed headers, in the order `SignedHeaders` lists them, as
//!   `name:value` with the name lowercased and each value trimmed and its
//!   inner runs of white space collapsed to one space (several headers of
//!   one name are joined with `,`), then an empty line;
//! - the `SignedHeaders` list itself;
//! - hex SHA-256 of the body (`x-amz-content-sha256`, when sent, must be
//!   exactly that).
//!
//! Errors carry the names, statuses and messages AWS JSON services send
//! (see `AuthError`). Signatures are compared in constant time
//! (`hmac::Mac::verify_slice`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::api::credentials::Credentials;
use crate::http;

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service name in the credential scope of every request `verify` accepts.
pub const SERVICE: &str = "ecs";
/// How far the request time may be from the server's clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
const TERMINATOR: &str = "aws4_request";

/// Headers botocore never signs (`SIGNED_HEADERS_BLACKLIST`), plus the
/// signature's own: `sign` leaves them out.
#[cfg(test)]
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

/// Why a request's signature was refused.
///
/// Names and messages are those AWS JSON-protocol services (ECS among them)
/// return; so is the HTTP status, which is 400 for all four on those
/// services: SDK reports of real responses show `status code: 400` for
/// ECS's `InvalidSignatureException` and `UnrecognizedClientException`,
/// and for DynamoDB's `MissingAuthenticationTokenException` ("Request is
/// missing Authentication Token"). The 403s of AWS's "Common Errors" pages
/// belong to the query protocol's `MissingAuthenticationToken`,
/// `InvalidClientTokenId` and `SignatureDoesNotMatch` (and to API Gateway
/// and Lambda), not to `x-amz-json-1.1` services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    MissingAuthenticationToken,
    /// The `Authorization` header is malformed, `X-Amz-Date` is missing or
    /// malformed, or a header that must be signed is not (or a signed one
    /// is absent).
    IncompleteSignature(String),
    /// The signature does not match, or the credential scope is wrong for
    /// this service or date.
    InvalidSignature(String),
    /// The request time is more than `MAX_SKEW` away from now. On the wire
    /// this is an `InvalidSignatureException` too.
    SignatureExpired(String),
    /// The access key id is not this host's.
    UnrecognizedClient,
}

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
     signature you provided. Check your AWS Secret Access Key and signing method. Consult \
     the service documentation for details.";

impl AuthError {
    /// The error name (`__type`) on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            AuthError::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            AuthError::IncompleteSignature(_) => "IncompleteSignatureException",
            AuthError::InvalidSignature(_) | AuthError::SignatureExpired(_) => {
                "InvalidSignatureException"
            }
            AuthError::UnrecognizedClient => "UnrecognizedClientException",
        }
    }

    /// The HTTP status on the wire.
    pub fn status(&self) -> u16 {
        400
    }

    /// The message on the wire.
    pub fn message(&self) -> &str {
        match self {
            AuthError::MissingAuthenticationToken => "Request is missing Authentication Token",
            AuthError::IncompleteSignature(m)
            | AuthError::InvalidSignature(m)
            | AuthError::SignatureExpired(m) => m,
            AuthError::UnrecognizedClient => {
                "The security token included in the request is invalid."
            }
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.message())
    }
}

impl std::error::Error for AuthError {}

/// Check the SigV4 signature of `req` (service `ecs`, any region) against
/// this host's key pair, with `now` as the server's clock.
pub fn verify(req: &http::Request, creds: &Credentials, now: SystemTime) -> Result<(), AuthError> {
    verify_service(req, creds, now, SERVICE)
}

/// The `Authorization` and `X-Amz-Date` headers to add to a request for
/// it to pass `verify` (service `ecs`, scoped to `region`, dated `now`).
/// Only the unit tests sign (against AWS's test suite); the integration
/// tests have their own signer (`tests/it/harness/sign.rs`), and the
/// warden never signs anything.
///
/// `headers` must include `Host` (the authority the request is sent to,
/// e.g. `127.0.0.1:PORT`): it is signed with every other header given,
/// except those botocore never signs (`User-Agent`, `Connection`, ...) and
/// any `Authorization` or `X-Amz-Date`, which are replaced.
#[cfg(test)]
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
    sign_service(
        method, path, query, headers, body, creds, region, SERVICE, now,
    )
}

#[cfg(test)]
#[allow(clippy::too_many_arguments)]
fn sign_service(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    let amz_date = format_amz_date(unix_seconds(now));
    let mut all: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k != "x-amz-date" && !UNSIGNED_HEADERS.contains(&k.as_str())
        })
        .cloned()
        .collect();
    all.push(("X-Amz-Date".to_string(), amz_date.clone()));
    let mut names: Vec<String> = all.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let signed = names.join(";");
    let canonical = canonical_request(
        method,
        path,
        query,
        &all,
        &names,
        &signed,
        &hex_sha256(body),
    )
    .expect("every signed header is present");
    let scope = format!("{}/{region}/{service}/{TERMINATOR}", &amz_date[..8]);
    let sts = string_to_sign(&amz_date, &scope, &canonical);
    let key = signing_key(&creds.secret_access_key, &amz_date[..8], region, service);
    let signature = hex(&hmac(&key, sts.as_bytes()));
    vec![
        (
            "Authorization".to_string(),
            format!(
                "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                creds.access_key_id
            ),
        ),
        ("X-Amz-Date".to_string(), amz_date),
    ]
}

/// The fields of an `Authorization` header.
struct Authorization<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn incomplete(m: impl Into<String>) -> AuthError {
    AuthError::IncompleteSignature(m.into())
}

fn invalid(m: impl Into<String>) -> AuthError {
    AuthError::InvalidSignature(m.into())
}

fn parse_authorization(value: &str, has_date: bool) -> Result<Authorization<'_>, AuthError> {
    let trimmed = value.trim();
    let (algorithm, params) = trimmed
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((trimmed, ""));
    if algorithm != ALGORITHM {
        // Not echoed: it may be some other scheme's secret token.
        return Err(incomplete(format!(
            "Unsupported Authorization scheme: only '{ALGORITHM}' (AWS Signature Version 4) \
             is accepted."
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(incomplete(format!(
                "'{part}' not a valid key=value pair (missing equal-sign) in Authorization \
                 header: '{trimmed}'."
            )));
        };
        let slot = match k.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => continue,
        };
        slot.get_or_insert(v.trim());
    }
    let mut problems = String::new();
    for (name, got) in [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed_headers),
    ] {
        if got.is_none_or(str::is_empty) {
            problems.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    if !has_date {
        problems.push_str("Authorization header requires existence of a 'X-Amz-Date' header. ");
    }
    if !problems.is_empty() {
        return Err(incomplete(format!("{problems}Authorization={trimmed}")));
    }
    Ok(Authorization {
        credential: credential.unwrap_or_default(),
        signed_headers: signed_headers.unwrap_or_default(),
        signature: signature.unwrap_or_default(),
    })
}

fn verify_service(
    req: &http::Request,
    creds: &Credentials,
    now: SystemTime,
    service: &str,
) -> Result<(), AuthError> {
    let authz = req
        .header("Authorization")
        .ok_or(AuthError::MissingAuthenticationToken)?;
    let amz_date = req.header("X-Amz-Date").map(str::trim);
    let auth = parse_authorization(authz, amz_date.is_some())?;
    let amz_date = amz_date.unwrap_or_default();

    // Credential=AKID/DATE/REGION/SERVICE/aws4_request
    let scope: Vec<&str> = auth.credential.split('/').collect();
    let &[key_id, scope_date, region, scope_service, terminator] = scope.as_slice() else {
        return Err(incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got '{}'",
            auth.credential
        )));
    };
    if terminator != TERMINATOR {
        return Err(incomplete(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not \
             '{terminator}'."
        )));
    }

    // SignedHeaders: lowercase names; host and x-amz-date among them.
    let names: Vec<String> = auth
        .signed_headers
        .split(';')
        .map(str::to_ascii_lowercase)
        .collect();
    if names
        .iter()
        .any(|n| n.is_empty() || n.bytes().any(|b| b.is_ascii_whitespace()))
    {
        return Err(incomplete(format!(
            "Invalid SignedHeaders '{}' in the AWS Authorization: expected header names \
             separated by ';'.",
            auth.signed_headers
        )));
    }
    if !names.iter().any(|n| n == "host") {
        return Err(incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    if !names.iter().any(|n| n == "x-amz-date") {
        return Err(incomplete(
            "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let request_time = parse_amz_date(amz_date).ok_or_else(|| {
        incomplete(format!(
            "Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See \
             http://en.wikipedia.org/wiki/ISO_8601"
        ))
    })?;

    // The scope must be this service's, on the request's date.
    if scope_service != service {
        return Err(invalid(format!(
            "Credential should be scoped to correct service: '{service}'. "
        )));
    }
    if region.is_empty() {
        return Err(invalid(
            "Credential should be scoped to a valid region, not ''. ",
        ));
    }
    if scope_date != &amz_date[..8] {
        return Err(invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
             from HTTP: '{scope_date}' != '{}', from '{amz_date}'.",
            &amz_date[..8]
        )));
    }

    // Whose key. This host has one key pair and no session tokens.
    if key_id != creds.access_key_id || req.header("X-Amz-Security-Token").is_some() {
        return Err(AuthError::UnrecognizedClient);
    }

    // When.
    let now_s = unix_seconds(now);
    let skew = MAX_SKEW.as_secs() as i64;
    if request_time < now_s - skew {
        return Err(AuthError::SignatureExpired(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
            format_amz_date(now_s - skew),
            format_amz_date(now_s)
        )));
    }
    if request_time > now_s + skew {
        return Err(AuthError::SignatureExpired(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
            format_amz_date(now_s + skew),
            format_amz_date(now_s)
        )));
    }

    // What: the body, then the signature over everything.
    let mut payload_hash = hex_sha256(&req.body);
    if let Some(claimed) = req.header("x-amz-content-sha256").map(str::trim) {
        if !claimed.eq_ignore_ascii_case(&payload_hash) {
            return Err(invalid(
                "The x-amz-content-sha256 header does not match the SHA-256 of the request \
                 body (unsigned payloads are not accepted).",
            ));
        }
        // botocore signs the header's value as sent.
        payload_hash = claimed.to_string();
    }
    let signed_line = names.join(";");
    let canonical = canonical_request(
        &req.method,
        &req.path,
        &req.query,
        &req.headers,
        &names,
        &signed_line,
        &payload_hash,
    )
    .map_err(|name| {
        incomplete(format!(
            "Signed header '{name}' is not present in the request."
        ))
    })?;
    let scope = format!("{scope_date}/{region}/{scope_service}/{TERMINATOR}");
    let sts = string_to_sign(amz_date, &scope, &canonical);
    let key = signing_key(&creds.secret_access_key, scope_date, region, service);
    let mut mac = HmacSha256::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(sts.as_bytes());
    let provided = unhex(auth.signature).unwrap_or_default();
    if mac.verify_slice(&provided).is_err() {
        log::debug!(
            "sigv4: signature mismatch for key {key_id}; canonical request:\n{canonical}\n\
             string to sign:\n{sts}"
        );
        return Err(invalid(SIGNATURE_MISMATCH));
    }
    Ok(())
}

/// The canonical request, or the name of a signed header missing from
/// `headers`. `names` are lowercase; `signed_line` is their `;` list.
fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    names: &[String],
    signed_line: &str,
    payload_hash: &str,
) -> Result<String, String> {
    let mut out = String::with_capacity(256);
    out.push_str(method);
    out.push('\n');
    out.push_str(&canonical_path(path));
    out.push('\n');
    out.push_str(&canonical_query(query));
    out.push('\n');
    for name in names {
        let values: Vec<String> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return Err(name.clone());
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed_line);
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

/// botocore's `_normalize_url_path`: remove dot and empty segments, then
/// percent-encode all but `A-Za-z0-9-_.~/`.
fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut normal = String::with_capacity(path.len());
    if path.starts_with('/') {
        normal.push('/');
    }
    normal.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        normal.push('/');
    }
    uri_encode(normal.as_bytes(), b"/")
}

/// Pairs decoded, re-encoded, sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&uri_decode(k), b""),
                uri_encode(&uri_decode(v), b""),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encode every byte but `A-Za-z0-9-_.~` and those in `keep`.
fn uri_encode(bytes: &[u8], keep: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Strict percent-decoding: `%XX` only (`+` stays `+`), bytes kept as bytes.
fn uri_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical.as_bytes())
    )
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, TERMINATOR.as_bytes())
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(hex_val(p[0])? << 4 | hex_val(p[1])?))
        .collect()
}

/// Seconds since the Unix epoch, negative before it.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX / 2),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYYMMDDTHHMMSSZ` (UTC) of a Unix time.
fn format_amz_date(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The Unix time of a `YYYYMMDDTHHMMSSZ` date; `None` unless it is exactly
/// that and a real UTC time.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r.clone()]
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| s[r].parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, sec) = (num(9..11)?, num(11..13)?, num(13..15)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=month_days).contains(&d) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    /// 20150830T123600Z, the AWS SigV4 test suite's date.
    const SUITE_TIME: u64 = 1_440_938_160;

    fn suite_creds() -> Credentials {
        Credentials {
            access_key_id: AKID.into(),
            secret_access_key: SECRET.into(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn hdrs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> http::Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        http::Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: hdrs(headers),
            body: body.as_bytes().to_vec(),
            tcp: true,
        }
    }

    /// A vector of the AWS SigV4 test suite (aws-sig-v4-test-suite):
    /// (name, method, target, headers, body, SignedHeaders, signature).
    type Vector = (
        &'static str,
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
        &'static str,
    );

    const SUITE: &[Vector] = &[
        (
            "get-vanilla",
            "GET",
            "/",
            &[
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            "",
            "host;x-amz-date",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "/?Param2=value2&Param1=value1",
            &[
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            "",
            "host;x-amz-date",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "post-x-www-form-urlencoded",
            "POST",
            "/",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            "Param1=value1",
            "content-type;host;x-amz-date",
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        ),
    ];

    fn suite_authorization(signed: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/20150830/us-east-1/service/aws4_request, \
             SignedHeaders={signed}, Signature={signature}"
        )
    }

    #[test]
    fn aws_test_suite_vectors_verify() {
        for (name, method, target, headers, body, signed, signature) in SUITE {
            let mut req = request(method, target, headers, body);
            req.headers.push((
                "Authorization".into(),
                suite_authorization(signed, signature),
            ));
            assert_eq!(
                verify_service(&req, &suite_creds(), at(SUITE_TIME), "service"),
                Ok(()),
                "{name}"
            );
            // And `verify` proper refuses them: they are not for ECS.
            assert!(
                matches!(
                    verify(&req, &suite_creds(), at(SUITE_TIME)),
                    Err(AuthError::InvalidSignature(_))
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn aws_test_suite_vectors_sign() {
        for (name, method, target, headers, body, signed, signature) in SUITE {
            let req = request(method, target, headers, body);
            let out = sign_service(
                method,
                &req.path,
                &req.query,
                &req.headers,
                body.as_bytes(),
                &suite_creds(),
                "us-east-1",
                "service",
                at(SUITE_TIME),
            );
            assert_eq!(
                out,
                hdrs(&[
                    ("Authorization", &suite_authorization(signed, signature)),
                    ("X-Amz-Date", "20150830T123600Z"),
                ]),
                "{name}"
            );
        }
    }

    const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn ecs_creds() -> Credentials {
        Credentials {
            access_key_id: "EWLKABCDEFGHIJKLMNOP".into(),
            secret_access_key: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123".into(),
        }
    }

    /// An ECS JSON request signed at `NOW`.
    fn signed_ecs_request() -> http::Request {
        let mut req = request(
            "POST",
            "/",
            &[
                ("Host", "127.0.0.1:51678"),
                (
                    "X-Amz-Target",
                    "AmazonEC2ContainerServiceV20141113.UpdateContainerAgent",
                ),
                ("Content-Type", "application/x-amz-json-1.1"),
                ("User-Agent", "test/1.0"),
            ],
            r#"{"cluster":"default","containerInstance":"abc"}"#,
        );
        let added = sign(
            &req.method,
            &req.path,
            &req.query,
            &req.headers,
            &req.body,
            &ecs_creds(),
            "us-west-2",
            at(NOW),
        );
        req.headers.extend(added);
        req
    }

    fn check(req: &http::Request) -> Result<(), AuthError> {
        verify(req, &ecs_creds(), at(NOW))
    }

    fn set_header(req: &mut http::Request, name: &str, value: &str) {
        req.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        req.headers.push((name.into(), value.into()));
    }

    fn authz(req: &http::Request) -> String {
        req.header("Authorization").unwrap().to_string()
    }

    #[test]
    fn sign_then_verify() {
        let req = signed_ecs_request();
        assert_eq!(check(&req), Ok(()));
        assert!(authz(&req).contains("/us-west-2/ecs/aws4_request, "));
        assert!(authz(&req)
            .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="));
        // Any region: it comes from the scope.
        let mut req = signed_ecs_request();
        let added = sign(
            &req.method,
            &req.path,
            &req.query,
            &req.headers,
            &req.body,
            &ecs_creds(),
            "eu-central-1",
            at(NOW),
        );
        for (k, v) in added {
            set_header(&mut req, &k, &v);
        }
        assert_eq!(check(&req), Ok(()));
    }

    #[test]
    fn sign_then_verify_odd_paths_and_queries() {
        for target in [
            "/a/./b/../c//d/",
            "/%2Fencoded%20path/x y",
            "/?b=2&a=1&a=0&empty&sp=a%20b&plus=a+b&utf8=%C3%A9&bad=%zz",
            "",
        ] {
            let mut req = request("GET", target, &[("Host", "localhost")], "");
            let added = sign(
                &req.method,
                &req.path,
                &req.query,
                &req.headers,
                &req.body,
                &ecs_creds(),
                "us-east-1",
                at(NOW),
            );
            req.headers.extend(added);
            assert_eq!(check(&req), Ok(()), "{target}");
        }
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_path("/"), "/");
        assert_eq!(canonical_path("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(canonical_path("/../.."), "/");
        assert_eq!(canonical_path("/%2F x~"), "/%252F%20x~");
        assert_eq!(
            canonical_query("b=2&a=1&a=0&empty&x=a%20b&p=a+b&%7e=~"),
            "a=0&a=1&b=2&empty=&p=a%2Bb&x=a%20b&~=~"
        );
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        let mut req = signed_ecs_request();
        // Same canonical value: still valid.
        set_header(
            &mut req,
            "X-Amz-Target",
            "  AmazonEC2ContainerServiceV20141113.UpdateContainerAgent\t ",
        );
        assert_eq!(check(&req), Ok(()));
        let canonical = canonical_request(
            "GET",
            "/",
            "",
            &hdrs(&[("My-Header", "  a   b \t c  "), ("my-header", "d")]),
            &["my-header".to_string()],
            "my-header",
            "h",
        )
        .unwrap();
        assert_eq!(canonical, "GET\n/\n\nmy-header:a b c,d\n\nmy-header\nh");
    }

    #[test]
    fn unsigned_headers_may_change() {
        let mut req = signed_ecs_request();
        set_header(&mut req, "User-Agent", "something else");
        req.headers.push(("Content-Length".into(), "47".into()));
        assert_eq!(check(&req), Ok(()));
    }

    fn is_mismatch(r: Result<(), AuthError>) -> bool {
        matches!(r, Err(AuthError::InvalidSignature(m)) if m == SIGNATURE_MISMATCH)
    }

    #[test]
    fn tampering_is_an_invalid_signature() {
        let mut req = signed_ecs_request();
        req.body[2] ^= 1;
        assert!(is_mismatch(check(&req)));

        let mut req = signed_ecs_request();
        set_header(
            &mut req,
            "X-Amz-Target",
            "AmazonEC2ContainerServiceV20141113.DeleteCluster",
        );
        assert!(is_mismatch(check(&req)));

        let mut req = signed_ecs_request();
        set_header(&mut req, "Host", "127.0.0.1:1");
        assert!(is_mismatch(check(&req)));

        // A different time on the same day, well inside the window.
        let mut req = signed_ecs_request();
        set_header(&mut req, "X-Amz-Date", &format_amz_date(NOW as i64 + 1));
        assert!(is_mismatch(check(&req)));

        let mut req = signed_ecs_request();
        req.method = "PUT".into();
        assert!(is_mismatch(check(&req)));

        let mut req = signed_ecs_request();
        req.path = "/other".into();
        assert!(is_mismatch(check(&req)));

        let mut req = signed_ecs_request();
        req.query = "a=1".into();
        assert!(is_mismatch(check(&req)));

        // The wrong secret, the signature altered, or not hex at all.
        let req = signed_ecs_request();
        let mut other = ecs_creds();
        other.secret_access_key.replace_range(0..1, "z");
        assert!(is_mismatch(verify(&req, &other, at(NOW))));
        let a = authz(&req);
        for sig in [
            "0".repeat(64),
            "zz".repeat(32),
            String::from("ab"),
            String::new(),
        ] {
            let mut req = req.clone();
            let cut = a.find("Signature=").unwrap() + "Signature=".len();
            set_header(&mut req, "Authorization", &format!("{}{sig}", &a[..cut]));
            let r = check(&req);
            if sig.is_empty() {
                assert!(matches!(r, Err(AuthError::IncompleteSignature(_))), "{r:?}");
            } else {
                assert!(is_mismatch(r), "{sig}");
            }
        }
    }

    #[test]
    fn skew_over_five_minutes_is_expired() {
        let req = signed_ecs_request();
        let five = MAX_SKEW.as_secs();
        assert_eq!(verify(&req, &ecs_creds(), at(NOW + five)), Ok(()));
        assert_eq!(verify(&req, &ecs_creds(), at(NOW - five)), Ok(()));

        let late = verify(&req, &ecs_creds(), at(NOW + five + 1)).unwrap_err();
        assert_eq!(late.name(), "InvalidSignatureException");
        assert_eq!(
            late,
            AuthError::SignatureExpired(
                "Signature expired: 20260101T000000Z is now earlier than 20260101T000001Z \
                 (20260101T000501Z - 5 min.)"
                    .into()
            )
        );
        let early = verify(&req, &ecs_creds(), at(NOW - five - 1)).unwrap_err();
        assert_eq!(
            early.message(),
            "Signature not yet current: 20260101T000000Z is still later than \
             20251231T235959Z (20251231T235459Z + 5 min.)"
        );
    }

    #[test]
    fn unknown_key_is_unrecognized() {
        let req = signed_ecs_request();
        let other = Credentials {
            access_key_id: "EWLKZZZZZZZZZZZZZZZZ".into(),
            ..ecs_creds()
        };
        let e = verify(&req, &other, at(NOW)).unwrap_err();
        assert_eq!(e, AuthError::UnrecognizedClient);
        assert_eq!(e.name(), "UnrecognizedClientException");
        assert_eq!(
            e.message(),
            "The security token included in the request is invalid."
        );
        // A session token: not one of ours either.
        let mut req = signed_ecs_request();
        req.headers
            .push(("X-Amz-Security-Token".into(), "token".into()));
        assert_eq!(check(&req), Err(AuthError::UnrecognizedClient));
    }

    #[test]
    fn missing_authorization() {
        let mut req = signed_ecs_request();
        req.headers.retain(|(k, _)| k != "Authorization");
        let e = check(&req).unwrap_err();
        assert_eq!(e, AuthError::MissingAuthenticationToken);
        assert_eq!(e.name(), "MissingAuthenticationTokenException");
        assert_eq!(e.message(), "Request is missing Authentication Token");
        assert_eq!(e.status(), 400);
    }

    fn incomplete_message(r: Result<(), AuthError>) -> String {
        match r {
            Err(AuthError::IncompleteSignature(m)) => m,
            other => panic!("expected IncompleteSignature, got {other:?}"),
        }
    }

    #[test]
    fn malformed_authorization_is_incomplete() {
        let good = authz(&signed_ecs_request());
        let with = |value: &str| {
            let mut req = signed_ecs_request();
            set_header(&mut req, "Authorization", value);
            check(&req)
        };
        let m = incomplete_message(with(
            "AWS4-HMAC-SHA256 Credential=EWLK/20260101/x/ecs/aws4_request",
        ));
        assert!(
            m.starts_with(
                "Authorization header requires 'Signature' parameter. Authorization header \
             requires 'SignedHeaders' parameter. Authorization=AWS4-HMAC-SHA256"
            ),
            "{m}"
        );
        let m = incomplete_message(with("Bearer secret-token"));
        assert!(!m.contains("secret-token"), "{m}");
        let m = incomplete_message(with(""));
        assert!(m.contains("AWS4-HMAC-SHA256"), "{m}");
        let m = incomplete_message(with(&good.replace("Credential=", "Credential ")));
        assert!(m.contains("not a valid key=value pair"), "{m}");
        let m = incomplete_message(with(&good.replace("/aws4_request", "")));
        assert!(m.starts_with("Credential must have exactly 5"), "{m}");
        let m = incomplete_message(with(&good.replace("/aws4_request", "/aws5_request")));
        assert!(m.contains("valid terminator"), "{m}");
        let m = incomplete_message(with(&good.replace("content-type;", "content-type;;")));
        assert!(m.starts_with("Invalid SignedHeaders"), "{m}");
    }

    #[test]
    fn dates_and_required_headers_are_incomplete() {
        let mut req = signed_ecs_request();
        req.headers.retain(|(k, _)| k != "X-Amz-Date");
        let m = incomplete_message(check(&req));
        assert!(
            m.contains("requires existence of a 'X-Amz-Date' header"),
            "{m}"
        );

        for bad in [
            "2026-01-01T00:00:00Z",
            "20260101T000000",
            "20261301T000000Z",
            "20260230T000000Z",
            "20260101T240000Z",
            "2026010aT000000Z",
        ] {
            let mut req = signed_ecs_request();
            set_header(&mut req, "X-Amz-Date", bad);
            let m = incomplete_message(check(&req));
            assert!(
                m.starts_with("Date must be in ISO-8601 'basic format'"),
                "{bad}: {m}"
            );
        }

        let a = authz(&signed_ecs_request());
        let mut req = signed_ecs_request();
        set_header(
            &mut req,
            "Authorization",
            &a.replace("content-type;host;", "content-type;"),
        );
        let m = incomplete_message(check(&req));
        assert!(
            m.starts_with("'Host' or ':authority' must be a 'SignedHeader'"),
            "{m}"
        );

        let mut req = signed_ecs_request();
        set_header(&mut req, "Authorization", &a.replace(";x-amz-date;", ";"));
        let m = incomplete_message(check(&req));
        assert!(
            m.starts_with("'X-Amz-Date' must be a 'SignedHeader'"),
            "{m}"
        );

        let mut req = signed_ecs_request();
        req.headers.retain(|(k, _)| k != "X-Amz-Target");
        let m = incomplete_message(check(&req));
        assert_eq!(
            m,
            "Signed header 'x-amz-target' is not present in the request."
        );
    }

    #[test]
    fn wrong_scope_is_invalid() {
        let a = authz(&signed_ecs_request());
        let with = |value: &str| {
            let mut req = signed_ecs_request();
            set_header(&mut req, "Authorization", value);
            check(&req)
        };
        assert_eq!(
            with(&a.replace("/ecs/", "/s3/")),
            Err(AuthError::InvalidSignature(
                "Credential should be scoped to correct service: 'ecs'. ".into()
            ))
        );
        assert!(matches!(
            with(&a.replace("/20260101/", "/20251231/")),
            Err(AuthError::InvalidSignature(m)) if m.starts_with("Date in Credential scope does not match")
        ));
        assert!(matches!(
            with(&a.replace("/us-west-2/", "//")),
            Err(AuthError::InvalidSignature(m)) if m.contains("valid region")
        ));
    }

    #[test]
    fn content_sha256_must_match_the_body() {
        let mut req = signed_ecs_request();
        let good = hex_sha256(&req.body);
        req.headers
            .push(("x-amz-content-sha256".into(), good.clone()));
        assert_eq!(check(&req), Ok(()), "unsigned, but it matches");
        // As botocore does, the header's value as sent is what is signed.
        set_header(&mut req, "x-amz-content-sha256", &good.to_uppercase());
        assert!(is_mismatch(check(&req)));
        for bad in ["UNSIGNED-PAYLOAD".to_string(), hex_sha256(b"other")] {
            set_header(&mut req, "x-amz-content-sha256", &bad);
            assert!(
                matches!(check(&req), Err(AuthError::InvalidSignature(m)) if m.contains("x-amz-content-sha256")),
                "{bad}"
            );
        }
        // Signed and matching.
        let mut req = signed_ecs_request();
        req.headers
            .retain(|(k, _)| k != "Authorization" && k != "X-Amz-Date");
        req.headers.push(("X-Amz-Content-Sha256".into(), good));
        let added = sign(
            &req.method,
            &req.path,
            &req.query,
            &req.headers,
            &req.body,
            &ecs_creds(),
            "us-west-2",
            at(NOW),
        );
        req.headers.extend(added);
        assert!(authz(&req).contains(";x-amz-content-sha256;"));
        assert_eq!(check(&req), Ok(()));
    }

    #[test]
    fn names_and_statuses() {
        let all = [
            AuthError::MissingAuthenticationToken,
            AuthError::IncompleteSignature("m".into()),
            AuthError::InvalidSignature("m".into()),
            AuthError::SignatureExpired("m".into()),
            AuthError::UnrecognizedClient,
        ];
        let names: Vec<_> = all.iter().map(|e| (e.name(), e.status())).collect();
        assert_eq!(
            names,
            [
                ("MissingAuthenticationTokenException", 400),
                ("IncompleteSignatureException", 400),
                ("InvalidSignatureException", 400),
                ("InvalidSignatureException", 400),
                ("UnrecognizedClientException", 400),
            ]
        );
        assert_eq!(
            AuthError::IncompleteSignature("why".into()).to_string(),
            "IncompleteSignatureException: why"
        );
    }

    #[test]
    fn amz_dates() {
        assert_eq!(format_amz_date(0), "19700101T000000Z");
        assert_eq!(format_amz_date(SUITE_TIME as i64), "20150830T123600Z");
        assert_eq!(format_amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(format_amz_date(-1), "19691231T235959Z");
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(SUITE_TIME as i64));
        assert_eq!(parse_amz_date("20000229T000000Z"), Some(951_782_400));
        assert_eq!(parse_amz_date("19000229T000000Z"), None);
        // Round trip, a day and a bit at a time across four centuries.
        let mut t = -2_208_988_800; // 1900
        while t < 10_413_792_000 {
            // 2300
            assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t), "{t}");
            t += 86_400 * 7 + 3_607;
        }
        // Pre-epoch and far-future clocks do not panic.
        let _ = format_amz_date(unix_seconds(UNIX_EPOCH - Duration::from_secs(1 << 40)));
        let _ = format_amz_date(i64::MAX / 2);
    }
}
