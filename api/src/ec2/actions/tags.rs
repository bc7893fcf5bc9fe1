//! Tags: one table (`tags`, migration 0005) for every kind of resource,
//! keyed by project and resource id. CreateTags, DeleteTags, DescribeTags and
//! the `tagSet` of every Describe*.

use std::collections::HashMap;

use sqlx::{Any, Row, Transaction};

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::params::Filter;
use super::super::xml::Xml;
use super::{dry_run, paginate, Ctx};
use crate::db::{Db, DbError, DbResult};

/// Tags of one resource, sorted by key.
pub type TagList = Vec<(String, String)>;

/// Most tags a resource may carry (EC2's limit).
pub const MAX_TAGS: usize = 50;

/// EC2's resource type for an id.
pub fn resource_type(id: &str) -> Option<&'static str> {
    let (prefix, _) = id.split_once('-')?;
    Some(match prefix {
        "i" => "instance",
        "ami" => "image",
        "vol" => "volume",
        "snap" => "snapshot",
        "key" => "key-pair",
        "sg" => "security-group",
        "eipalloc" => "elastic-ip",
        "vpc" => "vpc",
        "subnet" => "subnet",
        _ => return None,
    })
}

/// Tags of every resource of the project, by resource id.
pub async fn all_of_project(db: &Db, project: &kumo_wire::ProjectId) -> DbResult<HashMap<String, TagList>> {
    let rows = sqlx::query(
        "SELECT resource_id, tag_key, tag_value FROM tags WHERE project_id = $1 ORDER BY resource_id, tag_key",
    )
    .bind(project.as_str())
    .fetch_all(db.pool())
    .await?;
    let mut out: HashMap<String, TagList> = HashMap::new();
    for r in rows {
        out.entry(r.try_get("resource_id")?).or_default().push((r.try_get("tag_key")?, r.try_get("tag_value")?));
    }
    Ok(out)
}

/// Sets tags in `tx` (replacing the values of keys already there);
/// `TagLimitExceeded` if `resource` would then carry more than [`MAX_TAGS`].
pub async fn put(
    tx: &mut Transaction<'static, Any>,
    project: &kumo_wire::ProjectId,
    resource: &str,
    tags: &[(String, String)],
) -> Ec2Result<()> {
    if put_counting(tx, project, resource, tags).await? > MAX_TAGS {
        return Err(Ec2Error::client("TagLimitExceeded", format!("{resource} would carry over {MAX_TAGS} tags")));
    }
    Ok(())
}

/// Sets tags in `tx`; how many `resource` carries then.
async fn put_counting(
    tx: &mut Transaction<'static, Any>,
    project: &kumo_wire::ProjectId,
    resource: &str,
    tags: &[(String, String)],
) -> DbResult<usize> {
    for (k, v) in tags {
        sqlx::query("DELETE FROM tags WHERE project_id = $1 AND resource_id = $2 AND tag_key = $3")
            .bind(project.as_str())
            .bind(resource)
            .bind(k)
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO tags (project_id, resource_id, tag_key, tag_value) VALUES ($1, $2, $3, $4)")
            .bind(project.as_str())
            .bind(resource)
            .bind(k)
            .bind(v)
            .execute(&mut **tx)
            .await?;
    }
    let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tags WHERE project_id = $1 AND resource_id = $2")
        .bind(project.as_str())
        .bind(resource)
        .fetch_one(&mut **tx)
        .await?
        .try_get("n")?;
    Ok(usize::try_from(count).unwrap_or(usize::MAX))
}

/// Checks tag keys and values the way EC2 does.
pub fn validate(tags: &[(String, String)]) -> Ec2Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Ec2Error::client("TagLimitExceeded", format!("a resource carries at most {MAX_TAGS} tags")));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(Ec2Error::invalid_value("tag keys are 1-128 characters"));
        }
        if k.starts_with("aws:") {
            return Err(Ec2Error::invalid_value("tag keys starting with 'aws:' are reserved"));
        }
        if v.chars().count() > 256 {
            return Err(Ec2Error::invalid_value("tag values are at most 256 characters"));
        }
    }
    Ok(())
}

/// Tags a resource that was just created (TagSpecifications).
pub async fn tag_new(ctx: &Ctx<'_>, resource: &str, tags: &[(String, String)]) -> Ec2Result<()> {
    if tags.is_empty() {
        return Ok(());
    }
    let mut tx = ctx.state.db.begin_write().await?;
    put(&mut tx, &ctx.caller.project_id, resource, tags).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

/// Whether a tag filter (`tag:Key`, `tag-key`, `tag-value`) matches these tags;
/// `None` when the filter is not about tags.
pub fn tag_filter(f: &Filter, tags: &[(String, String)]) -> Option<bool> {
    if let Some(key) = f.name.strip_prefix("tag:") {
        return Some(tags.iter().any(|(k, v)| k == key && f.matches(v)));
    }
    match f.name.as_str() {
        "tag-key" => Some(tags.iter().any(|(k, _)| f.matches(k))),
        "tag-value" => Some(tags.iter().any(|(_, v)| f.matches(v))),
        _ => None,
    }
}

/// Whether a resource exists (and is not deleted) in the caller's project.
async fn exists(ctx: &Ctx<'_>, id: &str) -> Ec2Result<bool> {
    let project = &ctx.caller.project_id;
    let db = &ctx.state.db;
    Ok(match resource_type(id) {
        Some("instance") => match id.parse() {
            Ok(iid) => db.instance_in_project(project, &iid).await?.is_some_and(|i| i.deleted_at.is_none()),
            Err(_) => false,
        },
        Some("volume") => db.volume_in_project(project, id).await?.is_some_and(|v| v.deleted_at.is_none()),
        Some("snapshot") => db.snapshot_in_project(project, id).await?.is_some_and(|s| s.deleted_at.is_none()),
        Some("image") => db.find_image(project, id).await?.is_some_and(|i| i.id.as_str() == id),
        Some("key-pair") => db.find_key_pair(project, id).await?.is_some_and(|k| k.id.as_str() == id),
        Some("vpc") => crate::networks::vpcs::find(ctx.state, &ctx.caller, id).await.is_ok(),
        Some("subnet") => super::vpcs::find_subnet(ctx, id).await.is_ok(),
        _ => false,
    })
}

fn malformed_code(id: &str) -> (&'static str, &'static str) {
    match resource_type(id) {
        Some("instance") => ("InvalidInstanceID.NotFound", "instance"),
        Some("volume") => ("InvalidVolume.NotFound", "volume"),
        Some("snapshot") => ("InvalidSnapshot.NotFound", "snapshot"),
        Some("image") => ("InvalidAMIID.NotFound", "image"),
        Some("key-pair") => ("InvalidKeyPair.NotFound", "key pair"),
        Some("vpc") => ("InvalidVpcID.NotFound", "vpc"),
        Some("subnet") => ("InvalidSubnetID.NotFound", "subnet"),
        _ => ("InvalidID", "resource"),
    }
}

async fn resources(ctx: &Ctx<'_>, param: &str) -> Ec2Result<Vec<String>> {
    let ids = ctx.params.list(param);
    if ids.is_empty() {
        return Err(Ec2Error::missing(&format!("{param}.1")));
    }
    for id in &ids {
        if !exists(ctx, id).await? {
            let (code, what) = malformed_code(id);
            if code == "InvalidID" {
                return Err(Ec2Error::client("InvalidID", format!("The ID '{id}' is not valid")));
            }
            return Err(Ec2Error::not_found(code, what, id));
        }
    }
    Ok(ids)
}

/// `CreateTags`.
pub async fn create_tags(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let ids = resources(ctx, "ResourceId").await?;
    let tags: Vec<(String, String)> =
        ctx.params.tags("Tag")?.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
    if tags.is_empty() {
        return Err(Ec2Error::missing("Tag.1.Key"));
    }
    validate(&tags)?;
    dry_run(ctx)?;
    let mut tx = ctx.state.db.begin_write().await?;
    for id in &ids {
        put(&mut tx, &ctx.caller.project_id, id, &tags).await?;
    }
    tx.commit().await.map_err(DbError::from)?;
    x.leaf("return", true);
    Ok(())
}

/// `DeleteTags`: a tag given with a value is deleted only when the value matches.
pub async fn delete_tags(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let ids = resources(ctx, "ResourceId").await?;
    let tags = ctx.params.tags("Tag")?;
    dry_run(ctx)?;
    let mut tx = ctx.state.db.begin_write().await?;
    for id in &ids {
        if tags.is_empty() {
            sqlx::query("DELETE FROM tags WHERE project_id = $1 AND resource_id = $2")
                .bind(ctx.caller.project_id.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(DbError::from)?;
        }
        for (k, v) in &tags {
            let q = match v {
                Some(v) => sqlx::query(
                    "DELETE FROM tags WHERE project_id = $1 AND resource_id = $2 AND tag_key = $3 AND tag_value = $4",
                )
                .bind(ctx.caller.project_id.as_str())
                .bind(id)
                .bind(k)
                .bind(v),
                None => sqlx::query("DELETE FROM tags WHERE project_id = $1 AND resource_id = $2 AND tag_key = $3")
                    .bind(ctx.caller.project_id.as_str())
                    .bind(id)
                    .bind(k),
            };
            q.execute(&mut *tx).await.map_err(DbError::from)?;
        }
    }
    tx.commit().await.map_err(DbError::from)?;
    x.leaf("return", true);
    Ok(())
}

/// `DescribeTags`: tags of resources that still exist.
pub async fn describe_tags(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let filters = ctx.params.filters()?;
    let all = all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
    let mut ids: Vec<&String> = all.keys().collect();
    ids.sort();
    let mut rows = Vec::new();
    for id in ids {
        let kind = resource_type(id).unwrap_or("unknown");
        if !exists(ctx, id).await? {
            continue;
        }
        for (k, v) in &all[id] {
            let keep = filters.iter().all(|f| match f.name.as_str() {
                "resource-id" => f.matches(id),
                "resource-type" => f.matches(kind),
                "key" => f.matches(k),
                "value" => f.matches(v),
                _ => tag_filter(f, &all[id]).unwrap_or(false),
            });
            if keep {
                rows.push((id.clone(), kind, k.clone(), v.clone()));
            }
        }
    }
    let (page, next) = paginate(ctx, rows, (5, 1000))?;
    x.set("tagSet", page, |x, (id, kind, k, v)| {
        x.leaf("resourceId", id).leaf("resourceType", kind).leaf("key", k).leaf("value", v);
    });
    x.opt("nextToken", next);
    Ok(())
}

/// Removes the tags of a resource that is gone for good.
pub async fn forget(db: &Db, project: &kumo_wire::ProjectId, resource: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM tags WHERE project_id = $1 AND resource_id = $2")
        .bind(project.as_str())
        .bind(resource)
        .execute(db.pool())
        .await?;
    Ok(())
}
