//! Per-project quotas: checked inside the write transaction that takes the
//! resource, after [`db::quotas::lock_project`], so two requests racing for
//! the last slot are serialized and exactly one of them gets it.

use kumo_wire::storage::{ProjectQuotas, QuotaResource, QuotaUsage, SetQuotas, UNLIMITED};
use kumo_wire::ProjectId;
use sqlx::{Any, Transaction};

use crate::db::quotas::{self, DEFAULT_SCOPE};
use crate::db::DbError;
use crate::error::ApiError;
use crate::state::AppState;

/// The largest limit an admin may set.
const MAX_LIMIT: i64 = 1_000_000_000;

pub use crate::db::quotas::{first_excess, QuotaExcess};

/// Locks `project`'s quotas in `tx` and refuses if `asks` would exceed one.
pub async fn check(
    tx: &mut Transaction<'static, Any>,
    project: &ProjectId,
    asks: &[(QuotaResource, u64)],
) -> Result<(), ApiError> {
    Ok(quotas::check_in(tx, project, asks).await?)
}

/// Locks `project`'s quotas and refuses one more rule in `group` past the
/// rules-per-group quota.
pub async fn check_rules_in_group(
    tx: &mut Transaction<'static, Any>,
    project: &ProjectId,
    group: &str,
) -> Result<(), ApiError> {
    quotas::lock_project(tx, project).await?;
    let rules_now = quotas::rules_in_group(tx, group).await?;
    let limits = quotas::effective_limits(tx, project).await?;
    let limit = limits.get(&QuotaResource::RulesPerGroup).map_or(UNLIMITED, |(v, _)| *v);
    match first_excess(&[(QuotaResource::RulesPerGroup, 1)], |_| limit, |_| rules_now) {
        Some(excess) => Err(ApiError::QuotaExceeded(excess)),
        None => Ok(()),
    }
}

/// Checks `asks` in a transaction that is then dropped: for work that must be
/// refused before it changes anything outside the database (an image file
/// about to be put in place). The write's own transaction checks again.
pub async fn precheck(state: &AppState, project: &ProjectId, asks: &[(QuotaResource, u64)]) -> Result<(), ApiError> {
    let mut tx = state.db.begin_write().await?;
    check(&mut tx, project, asks).await
}

/// Whole GiB (rounded up) that `bytes` take against a GiB quota.
pub fn gib_of(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024 * 1024)
}

/// A project's quotas with their use.
pub async fn report(state: &AppState, project: &ProjectId) -> Result<ProjectQuotas, ApiError> {
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    let limits = quotas::effective_limits(&mut conn, project).await?;
    let usage = quotas::usage(&mut conn, project).await?;
    Ok(ProjectQuotas {
        project_id: project.clone(),
        quotas: QuotaResource::ALL
            .iter()
            .copied()
            .map(|resource| {
                let (limit, overridden) = limits.get(&resource).copied().unwrap_or((resource.builtin_default(), false));
                QuotaUsage { resource, limit, in_use: usage.get(&resource).copied().unwrap_or(0), overridden }
            })
            .collect(),
    })
}

fn validate(set: &SetQuotas) -> Result<Vec<(QuotaResource, i64)>, ApiError> {
    let limits = set.limits();
    if let Some((r, v)) = limits.iter().find(|(_, v)| *v < UNLIMITED || *v > MAX_LIMIT) {
        return Err(ApiError::Invalid(format!(
            "quota {r} must be -1 (unlimited) or between 0 and {MAX_LIMIT}, not {v}"
        )));
    }
    if limits.is_empty() && set.reset.is_empty() {
        return Err(ApiError::Invalid("give at least one quota to set (or to reset)".into()));
    }
    Ok(limits)
}

/// Sets a project's own limits (admin).
pub async fn set_for_project(state: &AppState, project: &ProjectId, set: &SetQuotas) -> Result<(), ApiError> {
    let limits = validate(set)?;
    let mut tx = state.db.begin_write().await?;
    quotas::lock_project(&mut tx, project).await?;
    quotas::set_limits(&mut tx, project.as_str(), &limits, &set.reset).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

/// Sets the cloud-wide defaults (admin).
pub async fn set_defaults(state: &AppState, set: &SetQuotas) -> Result<(), ApiError> {
    if !set.reset.is_empty() {
        return Err(ApiError::Invalid("reset applies to a project's own quotas, not to the defaults".into()));
    }
    let limits = validate(set)?;
    let mut tx = state.db.begin_write().await?;
    quotas::set_limits(&mut tx, DEFAULT_SCOPE, &limits, &[]).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use QuotaResource as R;

    fn check(asks: &[(QuotaResource, u64)], limit: i64, used: u64) -> Option<String> {
        first_excess(asks, |_| limit, |_| used).map(|e| e.to_string())
    }

    #[test]
    fn the_first_exceeded_quota_is_named_with_its_use() {
        assert_eq!(check(&[(R::Instances, 1)], 2, 1), None);
        assert_eq!(
            check(&[(R::Instances, 1)], 2, 2).as_deref(),
            Some(
                "quota exceeded for instances: this request needs 1 more, the project uses 2 of its limit of 2 \
                 (an admin can raise it with `kumo quota set`)"
            )
        );
        let msg = check(&[(R::Instances, 0), (R::RamMib, 512)], 1024, 768).expect("over");
        assert!(msg.starts_with("quota exceeded for ram_mib: this request needs 512 MiB more, the project uses 768 MiB of its limit of 1024 MiB"), "{msg}");
    }

    #[test]
    fn unlimited_and_zero_limits() {
        assert_eq!(check(&[(R::Vcpus, 1_000)], UNLIMITED, 1_000_000), None);
        assert!(check(&[(R::Snapshots, 1)], 0, 0).is_some());
        assert_eq!(check(&[(R::Snapshots, 0)], 0, 5), None, "asking for nothing never fails");
    }

    #[test]
    fn limits_are_validated() {
        assert!(validate(&SetQuotas { instances: Some(-2), ..SetQuotas::default() }).is_err());
        assert!(validate(&SetQuotas::default()).is_err());
        assert_eq!(validate(&SetQuotas { vcpus: Some(-1), ..SetQuotas::default() }).expect("ok"), vec![(R::Vcpus, -1)]);
    }
}
