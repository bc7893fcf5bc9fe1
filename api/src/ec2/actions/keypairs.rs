//! CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair over the
//! project's key pairs (`db/keypairs.rs`). EC2 key names map to Kumo names,
//! which follow AWS's rules (1-255 printable ASCII characters).

use kumo_wire::api::KeyPair;

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::xml::{time, Xml};
use super::{dry_run, tags, Ctx};
use crate::db::DbError;
use crate::keys::{generate, parse_public_key};

fn check_name(name: &str) -> Ec2Result<()> {
    crate::names::validate_key_pair_name(name).map_err(Ec2Error::from)
}

async fn store(ctx: &Ctx<'_>, name: &str, public_line: &str) -> Ec2Result<KeyPair> {
    let (key_type, fingerprint, public_key) = parse_public_key(public_line).map_err(Ec2Error::from)?;
    let tags = ctx.params.tag_specifications("key-pair")?;
    tags::validate(&tags)?;
    dry_run(ctx)?;
    match ctx.state.db.insert_key_pair(&ctx.caller.project_id, name, &key_type, &fingerprint, &public_key).await {
        Ok(kp) => {
            tags::tag_new(ctx, kp.id.as_str(), &tags).await?;
            Ok(kp)
        }
        Err(DbError::Duplicate) => {
            Err(Ec2Error::client("InvalidKeyPair.Duplicate", format!("The keypair '{name}' already exists.")))
        }
        Err(e) => Err(e.into()),
    }
}

fn ec2_key_type(kp: &KeyPair) -> &'static str {
    if kp.key_type.contains("rsa") {
        "rsa"
    } else {
        "ed25519"
    }
}

/// `CreateKeyPair`: generates an Ed25519 pair; the private key is in the answer only.
pub async fn create_key_pair(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let name = ctx.params.required("KeyName")?;
    check_name(name)?;
    match ctx.params.get("KeyType") {
        None | Some("ed25519") => {}
        Some(other) => {
            return Err(Ec2Error::invalid_value(format!(
                "KeyType '{other}': Kumo generates ed25519 keys; import an RSA key with ImportKeyPair"
            )))
        }
    }
    let (public, private) = generate()?;
    let kp = store(ctx, name, &public).await?;
    x.leaf("keyName", &kp.name)
        .leaf("keyFingerprint", &kp.fingerprint)
        .leaf("keyMaterial", private.as_str())
        .leaf("keyPairId", &kp.id)
        .tags(&ctx.params.tag_specifications("key-pair")?);
    Ok(())
}

/// `ImportKeyPair`: `PublicKeyMaterial` is the base64 of an OpenSSH public key line.
pub async fn import_key_pair(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let name = ctx.params.required("KeyName")?;
    check_name(name)?;
    let material = ctx.params.base64("PublicKeyMaterial")?.ok_or_else(|| Ec2Error::missing("PublicKeyMaterial"))?;
    let line = String::from_utf8(material)
        .map_err(|_| Ec2Error::invalid_value("PublicKeyMaterial must be an OpenSSH public key line"))?;
    let kp = store(ctx, name, &line).await?;
    x.leaf("keyName", &kp.name)
        .leaf("keyFingerprint", &kp.fingerprint)
        .leaf("keyPairId", &kp.id)
        .tags(&ctx.params.tag_specifications("key-pair")?);
    Ok(())
}

/// `DescribeKeyPairs`: every name or id asked for must exist.
pub async fn describe_key_pairs(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let names = ctx.params.list("KeyName");
    let ids = ctx.params.list("KeyPairId");
    let filters = ctx.params.filters()?;
    let include_public = ctx.params.flag("IncludePublicKey")?;
    let all = ctx.state.db.list_key_pairs(&ctx.caller.project_id).await?;
    for n in &names {
        if !all.iter().any(|k| &k.name == n) {
            return Err(Ec2Error::client("InvalidKeyPair.NotFound", format!("The key pair '{n}' does not exist")));
        }
    }
    for i in &ids {
        if !all.iter().any(|k| k.id.as_str() == i) {
            return Err(Ec2Error::client("InvalidKeyPair.NotFound", format!("The key pair '{i}' does not exist")));
        }
    }
    let tags = tags::all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
    let none = Vec::new();
    let rows: Vec<&KeyPair> = all
        .iter()
        .filter(|k| names.is_empty() || names.contains(&k.name))
        .filter(|k| ids.is_empty() || ids.iter().any(|i| i == k.id.as_str()))
        .filter(|k| {
            let t = tags.get(k.id.as_str()).unwrap_or(&none);
            filters.iter().all(|f| match tags::tag_filter(f, t) {
                Some(m) => m,
                None => match f.name.as_str() {
                    "key-name" => f.matches(&k.name),
                    "key-pair-id" => f.matches(k.id.as_str()),
                    "fingerprint" => f.matches(&k.fingerprint),
                    "key-type" => f.matches(ec2_key_type(k)),
                    _ => false,
                },
            })
        })
        .collect();
    dry_run(ctx)?;
    x.set("keySet", rows, |x, k| {
        x.leaf("keyPairId", &k.id)
            .leaf("keyType", ec2_key_type(k))
            .tags(tags.get(k.id.as_str()).unwrap_or(&none))
            .leaf("createTime", time(k.created_at))
            .leaf("keyName", &k.name)
            .leaf("keyFingerprint", &k.fingerprint);
        if include_public {
            x.leaf("publicKey", &k.public_key);
        }
    });
    Ok(())
}

/// `DeleteKeyPair` by name or id. Like EC2, deleting a key that does not exist succeeds.
pub async fn delete_key_pair(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let target = match (ctx.params.get("KeyPairId"), ctx.params.get("KeyName")) {
        (Some(id), _) => id,
        (None, Some(name)) => name,
        (None, None) => return Err(Ec2Error::missing("KeyName")),
    };
    let found = ctx.state.db.find_key_pair(&ctx.caller.project_id, target).await?;
    dry_run(ctx)?;
    if let Some(kp) = &found {
        ctx.state.db.delete_key_pair(&ctx.caller.project_id, &kp.id).await?;
        tags::forget(&ctx.state.db, &ctx.caller.project_id, kp.id.as_str()).await?;
    }
    x.leaf("return", true);
    if let Some(kp) = found {
        x.leaf("keyPairId", &kp.id);
    }
    Ok(())
}
