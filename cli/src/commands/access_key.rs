//! `kumo access-key ...`: keys for the EC2-compatible API (boto3, the AWS CLI).

use clap::Subcommand;
use kumo_wire::api::Listing;
use kumo_wire::Timestamp;
use serde::{Deserialize, Serialize};

use crate::client::Reply;
use crate::commands::{fetch_all, Ctx};
use crate::error::Error;
use crate::output;

/// `kumo access-key ...`.
#[derive(Debug, Subcommand)]
pub enum AccessKeyCommand {
    /// Create an access key; its secret is shown only once.
    Create,
    /// List your access keys (without secrets).
    List,
    /// Revoke an access key.
    Delete {
        /// The access key id (AKIA...).
        id: String,
    },
}

/// An access key as the controller lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessKey {
    /// `AKIA...`.
    pub access_key_id: String,
    /// The project requests act in.
    pub project_id: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last accepted request.
    pub last_used_at: Option<Timestamp>,
}

/// A new key with its secret.
#[derive(Clone, Deserialize)]
pub struct CreatedAccessKey {
    /// The key.
    #[serde(flatten)]
    pub key: AccessKey,
    /// The secret, shown once.
    pub secret_access_key: String,
}

impl std::fmt::Debug for CreatedAccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedAccessKey").field("key", &self.key).finish_non_exhaustive()
    }
}

/// Runs one `kumo access-key` subcommand.
pub async fn dispatch(ctx: &Ctx, command: AccessKeyCommand) -> Result<(), Error> {
    match command {
        AccessKeyCommand::Create => {
            let reply: Reply<CreatedAccessKey> = ctx.client()?.post_empty(&["v1", "access-keys"]).await?;
            if ctx.json() {
                return output::print_json(&reply.raw);
            }
            let k = &reply.value;
            output::note("Save the secret now: Kumo shows it only once. Use it with boto3 or the AWS CLI.");
            output::print(&output::key_values(&[
                ("AccessKeyId", k.key.access_key_id.clone()),
                ("SecretAccessKey", k.secret_access_key.clone()),
                ("Project", k.key.project_id.clone()),
            ]))
        }
        AccessKeyCommand::List => {
            let listing: Listing<AccessKey> = fetch_all(&ctx.client()?, &["v1", "access-keys"], &[]).await?;
            ctx.show_listing(&listing, "No access keys.", |items| {
                let now = Timestamp::now();
                let mut t = output::table(["ACCESS KEY ID", "PROJECT", "CREATED", "LAST USED"]);
                for k in items {
                    t.add_row([
                        k.access_key_id.clone(),
                        k.project_id.clone(),
                        output::ago(k.created_at, now),
                        k.last_used_at.map_or_else(|| "never".to_owned(), |u| output::ago(u, now)),
                    ]);
                }
                output::render(&t)
            })
        }
        AccessKeyCommand::Delete { id } => {
            ctx.client()?.delete_no_content(&["v1", "access-keys", &id]).await?;
            ctx.done(&format!("Deleted access key {id}."))
        }
    }
}
