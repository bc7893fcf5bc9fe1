//! STS `GetCallerIdentity` on the EC2 endpoint (SigV4 scope `sts`, API
//! version 2011-06-15), so that a tool which checks its credentials first
//! (Ansible's `amazon.aws` modules, Terraform's provider) needs only its
//! endpoints pointed at Kumo. Answers and errors use STS's XML.

use axum::body::Bytes;
use axum::http::Uri;

use super::errors::{Ec2Error, Ec2Result};
use super::xml::escape;
use super::Ctx;

/// The service name in SigV4 credential scopes.
pub const SERVICE: &str = "sts";

/// STS's API version.
pub const API_VERSION: &str = "2011-06-15";

/// STS's namespace.
pub const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// The STS actions served.
pub const ACTIONS: &[&str] = &["GetCallerIdentity"];

/// Whether the request names an STS action (to answer errors in STS's shape).
pub fn is_sts_request(uri: &Uri, body: &Bytes) -> bool {
    let named = |raw: &[u8]| {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw)
            .ok()
            .is_some_and(|pairs| pairs.iter().any(|(k, v)| k == "Action" && ACTIONS.contains(&v.as_str())))
    };
    named(uri.query().unwrap_or("").as_bytes()) || named(body)
}

/// Runs one STS action.
pub fn dispatch(ctx: &Ctx<'_>, action: &str) -> Ec2Result<String> {
    match action {
        "GetCallerIdentity" => Ok(get_caller_identity(ctx)),
        other => Err(Ec2Error::invalid_action(other)),
    }
}

/// `GetCallerIdentity`: the key owner as an IAM user of the project's account.
fn get_caller_identity(ctx: &Ctx<'_>) -> String {
    let account = super::actions::owner_id(ctx);
    let user = ctx.caller.user_id.as_str();
    format!(
        "<GetCallerIdentityResponse xmlns=\"{NAMESPACE}\"><GetCallerIdentityResult>\
         <Arn>arn:aws:iam::{account}:user/{}</Arn><UserId>{}</UserId><Account>{account}</Account>\
         </GetCallerIdentityResult><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>\
         </GetCallerIdentityResponse>",
        escape(user),
        escape(user),
        escape(&ctx.request_id)
    )
}

/// STS's (the Query protocol's) error document.
pub fn error_document(e: &Ec2Error, request_id: &str) -> String {
    let kind = if e.status.is_server_error() { "Receiver" } else { "Sender" };
    format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error>\
         <RequestId>{}</RequestId></ErrorResponse>",
        escape(e.code),
        escape(&e.message),
        escape(request_id)
    )
}
