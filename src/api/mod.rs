//! The loopback ECS API's authentication: the host's local key pair
//! (`credentials`, an AWS shared-credentials file under `etc/ecs-warden/`)
//! and AWS Signature Version 4 checking (`sigv4`), so that
//! `AWS_SHARED_CREDENTIALS_FILE=<file> aws ecs ... --endpoint-url
//! http://127.0.0.1:PORT` is accepted and every other TCP caller is not.

pub mod credentials;
pub mod ecs;
pub mod sigv4;
pub mod status;
