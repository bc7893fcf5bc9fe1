//! DescribeAddressesAttribute, ModifyAddressAttribute and
//! ResetAddressAttribute: the `domain-name` (PTR record) of an Elastic IP.
//! Kumo serves no reverse DNS zone, so the name is stored (table
//! `ec2_address_ptr`, migration 0020) and shown, not published. AWS answers
//! a change with `ptrRecordUpdate` status `PENDING`; Kumo's Describe shows the
//! new name at once.

use sqlx::Row;

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::xml::Xml;
use super::network::find_address;
use super::{dry_run, paginate, Ctx};
use crate::db::networks::FloatingIpRecord;
use crate::db::DbError;
use crate::networks::floating_ips;

/// The only attribute EC2 has for addresses.
const DOMAIN_NAME: &str = "domain-name";

fn check_attribute(v: Option<&str>, required: bool) -> Ec2Result<()> {
    match v {
        None if !required => Ok(()),
        None => Err(Ec2Error::missing("Attribute")),
        Some(DOMAIN_NAME) => Ok(()),
        Some(other) => Err(Ec2Error::invalid_value(format!(
            "Value ({other}) for parameter Attribute is invalid. Valid values: {DOMAIN_NAME}"
        ))),
    }
}

/// A DNS name: labels of 1-63 letters, digits and '-' (not first or last),
/// at most 253 characters; stored with the trailing dot, as AWS shows it.
fn domain_name(raw: &str) -> Ec2Result<String> {
    let name = raw.strip_suffix('.').unwrap_or(raw);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !ok {
        return Err(Ec2Error::invalid_value(format!(
            "Value ({}) for parameter DomainName is invalid: use a DNS name",
            raw.chars().take(80).collect::<String>()
        )));
    }
    Ok(format!("{}.", name.to_ascii_lowercase()))
}

async fn ptr_records(ctx: &Ctx<'_>) -> Ec2Result<std::collections::HashMap<String, String>> {
    let rows = sqlx::query("SELECT allocation_id, ptr_record FROM ec2_address_ptr")
        .fetch_all(ctx.state.db.pool())
        .await
        .map_err(DbError::from)?;
    let mut out = std::collections::HashMap::new();
    for r in rows {
        out.insert(r.try_get("allocation_id").map_err(DbError::from)?, r.try_get("ptr_record").map_err(DbError::from)?);
    }
    Ok(out)
}

async fn store(ctx: &Ctx<'_>, id: &str, ptr: Option<&str>) -> Ec2Result<()> {
    let mut tx = ctx.state.db.begin_write().await?;
    sqlx::query("DELETE FROM ec2_address_ptr WHERE allocation_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::from)?;
    if let Some(ptr) = ptr {
        sqlx::query("INSERT INTO ec2_address_ptr (allocation_id, ptr_record) VALUES ($1, $2)")
            .bind(id)
            .bind(ptr)
            .execute(&mut *tx)
            .await
            .map_err(DbError::from)?;
    }
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

/// Forgets an address's PTR name (ReleaseAddress).
pub async fn forget(ctx: &Ctx<'_>, id: &str) -> Ec2Result<()> {
    store(ctx, id, None).await
}

fn write(x: &mut Xml, f: &FloatingIpRecord, ptr: Option<&str>, update: Option<&str>) {
    x.leaf("publicIp", f.address).leaf("allocationId", &f.id).opt("ptrRecord", ptr);
    if let Some(value) = update {
        x.with("ptrRecordUpdate", |x| {
            x.leaf("value", value).leaf("status", "PENDING");
        });
    }
}

/// `DescribeAddressesAttribute`: the project's (or the named) addresses with their PTR names.
pub async fn describe_addresses_attribute(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    check_attribute(ctx.params.get("Attribute"), false)?;
    let ids = ctx.params.list("AllocationId");
    for id in &ids {
        find_address(ctx, id).await?;
    }
    let all = floating_ips::list(ctx.state, &ctx.caller).await.map_err(Ec2Error::from)?;
    let ptrs = ptr_records(ctx).await?;
    let rows: Vec<_> = all.into_iter().filter(|f| ids.is_empty() || ids.iter().any(|i| i == f.id.as_str())).collect();
    dry_run(ctx)?;
    let (page, next) = paginate(ctx, rows, (1, 1000))?;
    x.set("addressSet", page, |x, f| {
        let ptr = ptrs.get(f.id.as_str()).map(String::as_str);
        write(x, &f, ptr, None);
    });
    x.opt("nextToken", next);
    Ok(())
}

/// `ModifyAddressAttribute`: sets the address's `DomainName`.
pub async fn modify_address_attribute(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let f = find_address(ctx, ctx.params.required("AllocationId")?).await?;
    let name = domain_name(ctx.params.required("DomainName")?)?;
    dry_run(ctx)?;
    let old = ptr_records(ctx).await?.remove(f.id.as_str());
    store(ctx, f.id.as_str(), Some(&name)).await?;
    x.with("address", |x| write(x, &f, old.as_deref(), Some(&name)));
    Ok(())
}

/// `ResetAddressAttribute`: removes the address's PTR name.
pub async fn reset_address_attribute(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let f = find_address(ctx, ctx.params.required("AllocationId")?).await?;
    check_attribute(ctx.params.get("Attribute"), true)?;
    dry_run(ctx)?;
    let old = ptr_records(ctx).await?.remove(f.id.as_str());
    store(ctx, f.id.as_str(), None).await?;
    x.with("address", |x| write(x, &f, old.as_deref(), Some("")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names() {
        assert_eq!(domain_name("Web.Example.com").unwrap(), "web.example.com.");
        assert_eq!(domain_name("a-b.example.com.").unwrap(), "a-b.example.com.");
        for bad in ["", ".", "-a.com", "a-.com", "a..com", "a_b.com", &"a".repeat(64), &"a.".repeat(130)] {
            assert!(domain_name(bad).is_err(), "{bad}");
        }
    }
}
