//! The lifecycle kernel: the one path by which an instance's, a volume's or a
//! snapshot's `state` changes.
//!
//! A [`Kind`] names a resource's table, state and event types and its
//! lifecycle table in `wire`. [`apply`] reads the row, runs the event through
//! the table ([`prepare`]: state, reason, deadline), lets the caller adjust
//! the desired fields, and [`commit`]s with compare-and-swap in one
//! transaction that also checks that the desired fields never change without
//! a new generation, appends the typed `wire::events::StateChanged` event and
//! carries out the side effects the kind returns as data ([`effects`]).
//! Conflicts are retried; [`watchdog`] moves every kind's rows past their
//! deadline to `error`.

use std::fmt;
use std::future::Future;

use futures::future::BoxFuture;
use kumo_wire::{ProjectId, Timestamp};
use serde::Serialize;
use sqlx::{Any, Transaction};

use crate::config::ControllerConfig;
use crate::db::events::{self, NewEvent};
use crate::db::{Db, DbError, DbResult};
use crate::error::ApiError;
use crate::state::AppState;

/// How often a compare-and-swap conflict is retried before giving up.
const CAS_ATTEMPTS: usize = 8;

/// The write transaction a commit runs in.
pub type Tx = Transaction<'static, Any>;

/// The columns every lifecycle row has, borrowed for [`prepare`].
#[derive(Debug)]
pub struct Common<'a, S> {
    /// Shown state.
    pub state: &'a mut S,
    /// Why it is in that state.
    pub state_reason: &'a mut Option<String>,
    /// When a transitional state expires.
    pub state_deadline: &'a mut Option<Timestamp>,
    /// When it reached `deleted`.
    pub deleted_at: &'a mut Option<Timestamp>,
    /// Last change (the compare-and-swap compares it).
    pub updated_at: &'a mut Timestamp,
}

/// A resource kind whose state the kernel moves.
pub trait Kind: Sized + Send + Sync + 'static {
    /// The `resource_type` of its events and its name in messages.
    const NAME: &'static str;
    /// Its kind in errors.
    const KIND: crate::error::Kind;
    /// The event that a state outliving its deadline sends.
    const DEADLINE_PASSED: Self::Event;
    /// Its id.
    type Id: fmt::Display + Clone + Send + Sync;
    /// Its states (the table's rows).
    type State: Copy + Eq + fmt::Display + fmt::Debug + Send + Sync;
    /// Its events (the table's columns).
    type Event: Copy + Eq + fmt::Debug + Send + Sync;
    /// Its row.
    type Record: Clone + PartialEq + fmt::Debug + Send + Sync;
    /// What the tenant asked for (the desired fields): it may not change
    /// without a new generation, so the agent sees every change.
    type Desired: PartialEq + fmt::Debug;
    /// The typed `detail` of its events (`wire::events`).
    type Detail: Serialize;

    /// The state after `event`, from the table in `wire`.
    fn next(state: Self::State, event: Self::Event) -> Option<Self::State>;
    /// Whether the kind's deleted state.
    fn is_deleted(state: Self::State) -> bool;
    /// How long `state` may last, if it is transitional.
    fn deadline_secs(config: &ControllerConfig, state: Self::State) -> Option<u64>;
    /// How the 409 for an event the table refuses names the resource (its
    /// name, if messages show one) and the event (in words).
    fn illegal(old: &Self::Record, event: Self::Event) -> (Option<String>, String);

    /// Its id.
    fn id(rec: &Self::Record) -> &Self::Id;
    /// Its id as stored.
    fn id_str(rec: &Self::Record) -> &str;
    /// Its project.
    fn project(rec: &Self::Record) -> &ProjectId;
    /// Its state.
    fn state(rec: &Self::Record) -> Self::State;
    /// When it last changed.
    fn updated_at(rec: &Self::Record) -> Timestamp;
    /// Its generation.
    fn generation(rec: &Self::Record) -> u64;
    /// Its desired fields.
    fn desired(rec: &Self::Record) -> Self::Desired;
    /// Its common columns, to change.
    fn common(rec: &mut Self::Record) -> Common<'_, Self::State>;
    /// What else the kind sets when `change` moves `old` to `new` (in [`prepare`]).
    fn entered(_old: &Self::Record, _new: &mut Self::Record, _change: &Change<Self::Event>) {}
    /// The event's typed detail.
    fn detail(old: &Self::Record, new: &Self::Record, change: &Change<Self::Event>) -> Self::Detail;
    /// What writing `new` over `old` entails besides the row and its event.
    fn effects(old: &Self::Record, new: &Self::Record) -> Vec<Effect>;

    /// Reads one row.
    fn load<'a>(db: &'a Db, id: &'a Self::Id) -> impl Future<Output = DbResult<Option<Self::Record>>> + Send + 'a;
    /// Writes `new` over `old` if the row is still `old` (compare-and-swap).
    fn save<'a>(
        tx: &'a mut Tx,
        old: &'a Self::Record,
        new: &'a Self::Record,
    ) -> impl Future<Output = DbResult<bool>> + Send + 'a;
    /// The rows whose transitional state outlived its deadline.
    fn past_deadline(db: &Db, now: Timestamp) -> impl Future<Output = DbResult<Vec<Self::Record>>> + Send + '_;
    /// Why `rec` timed out, in words.
    fn timeout_reason(config: &ControllerConfig, rec: &Self::Record) -> String;
}

/// The parts of a [`Kind`] impl that only name the record's columns (every
/// lifecycle row has `id`, `project_id`, `state`, `generation`, ...) and its
/// queries: `load` (a `Db` method), `save` (the compare-and-swap writer) and
/// `past_deadline` (a `Db` method).
macro_rules! record_columns {
    ($record:ty, $id:ty, $state:ty, load: $load:ident, save: $save:path, past_deadline: $past:ident) => {
        fn id(rec: &$record) -> &$id {
            &rec.id
        }
        fn id_str(rec: &$record) -> &str {
            rec.id.as_str()
        }
        fn project(rec: &$record) -> &kumo_wire::ProjectId {
            &rec.project_id
        }
        fn state(rec: &$record) -> $state {
            rec.state
        }
        fn updated_at(rec: &$record) -> kumo_wire::Timestamp {
            rec.updated_at
        }
        fn generation(rec: &$record) -> u64 {
            rec.generation
        }
        fn common(rec: &mut $record) -> $crate::lifecycle::Common<'_, $state> {
            $crate::lifecycle::Common {
                state: &mut rec.state,
                state_reason: &mut rec.state_reason,
                state_deadline: &mut rec.state_deadline,
                deleted_at: &mut rec.deleted_at,
                updated_at: &mut rec.updated_at,
            }
        }
        fn load<'a>(
            db: &'a $crate::db::Db,
            id: &'a $id,
        ) -> impl std::future::Future<Output = $crate::db::DbResult<Option<$record>>> + Send + 'a {
            db.$load(id)
        }
        fn save<'a>(
            tx: &'a mut $crate::lifecycle::Tx,
            old: &'a $record,
            new: &'a $record,
        ) -> impl std::future::Future<Output = $crate::db::DbResult<bool>> + Send + 'a {
            $save(tx, old, new)
        }
        fn past_deadline(
            db: &$crate::db::Db,
            now: kumo_wire::Timestamp,
        ) -> impl std::future::Future<Output = $crate::db::DbResult<Vec<$record>>> + Send + '_ {
            db.$past(now)
        }
    };
}
use record_columns;

pub mod effects;
mod instance;
mod snapshot;
mod volume;

pub use effects::Effect;
pub use instance::Instance;
pub use snapshot::Snapshot;
pub use volume::Volume;

/// One requested change.
#[derive(Debug, Clone)]
pub struct Change<E> {
    /// The lifecycle event.
    pub event: E,
    /// Who caused it, for the event log.
    pub actor: String,
    /// When it happened (agent-confirmed events carry the agent's time).
    pub at: Timestamp,
    /// A reason a user can read (stored as `state_reason`).
    pub reason: Option<String>,
}

impl<E> Change<E> {
    /// A change made now by `actor`.
    pub fn now(event: E, actor: impl Into<String>, reason: Option<String>) -> Self {
        Self { event, actor: actor.into(), at: Timestamp::now(), reason }
    }
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    /// No such resource.
    #[error("{kind} '{id}' not found")]
    NotFound {
        /// Its kind.
        kind: crate::error::Kind,
        /// The id asked for.
        id: String,
    },
    /// The lifecycle forbids it ([`ApiError::Illegal`]).
    #[error(transparent)]
    Illegal(ApiError),
    /// The database failed, the row kept changing under us, or the caller's edit refused.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<DbError> for TransitionError {
    fn from(e: DbError) -> Self {
        Self::Api(e.into())
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::NotFound { kind, id } => ApiError::NotFound { kind, id },
            TransitionError::Illegal(e) => e,
            TransitionError::Api(e) => e,
        }
    }
}

/// A lost race is no failure for a background pass: the resource is gone, or
/// someone else moved it first (the next pass sees the new state).
pub fn ignore_races<T>(result: Result<T, impl Into<ApiError>>) -> Result<(), ApiError> {
    match result.map_err(Into::into) {
        Ok(_) => Ok(()),
        Err(e) if e.is_race() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The deadline of `state` entered at `now`, if it is transitional.
pub fn deadline_for<K: Kind>(config: &ControllerConfig, state: K::State, now: Timestamp) -> Option<Timestamp> {
    let secs = K::deadline_secs(config, state)?;
    Some(now.plus_millis(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2)))
}

/// The record after `change`, or why the lifecycle forbids it. Pure: no I/O.
pub fn prepare<K: Kind>(
    config: &ControllerConfig,
    old: &K::Record,
    change: &Change<K::Event>,
) -> Result<K::Record, TransitionError> {
    let from = K::state(old);
    let next = K::next(from, change.event).ok_or_else(|| {
        let (name, event) = K::illegal(old, change.event);
        TransitionError::Illegal(ApiError::Illegal { kind: K::KIND, name, from: from.to_string(), event })
    })?;
    let mut new = old.clone();
    {
        let c = K::common(&mut new);
        *c.state = next;
        if next != from {
            *c.state_deadline = deadline_for::<K>(config, next, Timestamp::now());
            *c.state_reason = change.reason.clone();
        } else if change.reason.is_some() {
            *c.state_reason = change.reason.clone();
        }
        if K::is_deleted(next) && !K::is_deleted(from) {
            *c.deleted_at = Some(change.at);
            *c.state_deadline = None;
        }
    }
    K::entered(old, &mut new, change);
    Ok(new)
}

/// When a record written now over one last updated at `old` was updated
/// (strictly after `old`, for the compare-and-swap).
pub fn updated_at_after(old: Timestamp) -> Timestamp {
    let now = Timestamp::now();
    if now > old {
        now
    } else {
        old.plus_millis(1)
    }
}

/// Refuses a write that changes the desired fields without a new generation,
/// or lowers the generation: the agent would never see the change.
pub fn check_coherent<K: Kind>(old: &K::Record, new: &K::Record) -> Result<(), ApiError> {
    let (before, after) = (K::generation(old), K::generation(new));
    if after < before || (after == before && K::desired(old) != K::desired(new)) {
        return Err(ApiError::Internal(format!(
            "{} {}: desired {:?} -> {:?} at generation {before} -> {after}",
            K::NAME,
            K::id(old),
            K::desired(old),
            K::desired(new)
        )));
    }
    Ok(())
}

/// The event row that records `change` from `old` to `new`.
pub fn event_of<'a, K: Kind>(old: &K::Record, new: &'a K::Record, change: &'a Change<K::Event>) -> NewEvent<'a> {
    let action =
        if K::state(new) != K::state(old) { kumo_wire::events::STATE_CHANGED } else { kumo_wire::events::REQUESTED };
    NewEvent {
        project_id: Some(K::project(new)),
        resource_type: K::NAME,
        resource_id: K::id_str(new),
        at: change.at,
        actor: &change.actor,
        action,
        detail: serde_json::to_value(K::detail(old, new, change)).unwrap_or_default(),
    }
}

/// Writes `new` over `old` in `tx` (stamping `updated_at`), appends its event
/// and carries out the effects that belong in the transaction. Returns the
/// effects for after the commit, or `None`: the row changed meanwhile.
pub async fn commit<K: Kind>(
    tx: &mut Tx,
    config: &ControllerConfig,
    old: &K::Record,
    new: &mut K::Record,
    change: &Change<K::Event>,
) -> Result<Option<Vec<Effect>>, ApiError> {
    check_coherent::<K>(old, new)?;
    *K::common(new).updated_at = updated_at_after(K::updated_at(old));
    if !K::save(tx, old, new).await? {
        return Ok(None);
    }
    events::append(&mut **tx, &event_of::<K>(old, new, change)).await?;
    Ok(Some(effects::in_tx(tx, config, K::effects(old, new)).await?))
}

/// A caller's adjustment of the record inside the transaction, before the write.
pub type TxEdit<'e, R> =
    dyn for<'t> FnMut(&'t mut Tx, &'t R, &'t mut R) -> BoxFuture<'t, Result<(), ApiError>> + Send + 'e;

/// Applies `change` to `id`; `edit` may adjust the record further (desired
/// fields and their generation) after the state moved. Returns the stored
/// record. Retries when another writer got there first.
pub async fn apply<K: Kind>(
    state: &AppState,
    id: &K::Id,
    change: &Change<K::Event>,
    edit: impl FnMut(&K::Record, &mut K::Record) + Send,
) -> Result<K::Record, TransitionError> {
    run::<K>(state, id, change, edit, None).await
}

/// [`apply`], with an `edit` that runs inside the write transaction (it may
/// read and lock other rows, claim capacity, or refuse).
pub async fn apply_in_tx<K: Kind, F>(
    state: &AppState,
    id: &K::Id,
    change: &Change<K::Event>,
    mut edit: F,
) -> Result<K::Record, TransitionError>
where
    F: for<'t> FnMut(&'t mut Tx, &'t K::Record, &'t mut K::Record) -> BoxFuture<'t, Result<(), ApiError>> + Send,
{
    run::<K>(state, id, change, |_: &K::Record, _: &mut K::Record| {}, Some(&mut edit)).await
}

async fn run<K: Kind>(
    state: &AppState,
    id: &K::Id,
    change: &Change<K::Event>,
    mut edit: impl FnMut(&K::Record, &mut K::Record) + Send,
    mut tx_edit: Option<&mut TxEdit<'_, K::Record>>,
) -> Result<K::Record, TransitionError> {
    for _ in 0..CAS_ATTEMPTS {
        let old = K::load(&state.db, id)
            .await?
            .ok_or_else(|| TransitionError::NotFound { kind: K::KIND, id: id.to_string() })?;
        let mut new = prepare::<K>(&state.config, &old, change)?;
        edit(&old, &mut new);
        if tx_edit.is_none() && new == old {
            return Ok(old);
        }
        let mut tx = state.db.begin_write().await?;
        if let Some(tx_edit) = tx_edit.as_mut() {
            tx_edit(&mut tx, &old, &mut new).await?;
            if new == old {
                return Ok(old);
            }
        }
        let Some(after) = commit::<K>(&mut tx, &state.config, &old, &mut new, change).await? else { continue };
        tx.commit().await.map_err(DbError::from)?;
        effects::after_commit(state, &after);
        return Ok(new);
    }
    Err(TransitionError::Api(ApiError::Unavailable(format!("{} {id} is changing too quickly; try again", K::NAME))))
}

/// Moves every row of `K` past its deadline to `error`; returns how many.
pub async fn watchdog<K: Kind>(state: &AppState) -> Result<usize, ApiError> {
    let now = Timestamp::now();
    let expired = K::past_deadline(&state.db, now).await?;
    for rec in &expired {
        let reason = K::timeout_reason(&state.config, rec);
        let change = Change { event: K::DEADLINE_PASSED, actor: "controller".into(), at: now, reason: Some(reason) };
        ignore_races(apply::<K>(state, K::id(rec), &change, |_, _| {}).await)?;
    }
    Ok(expired.len())
}
