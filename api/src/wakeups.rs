//! Wake-ups across controller replicas: every [`HostNotifier::wake`] is also
//! sent as a PostgreSQL `NOTIFY` on [`CHANNEL`]; each replica `LISTEN`s and
//! wakes the agents long-polling it. So a change made through any replica
//! reaches an agent at once, whichever replica it polls. SQLite runs one
//! replica: its wake-ups stay in the process.
//!
//! [`HostNotifier::wake`]: crate::state::HostNotifier::wake

use std::time::Duration;

use kumo_wire::HostId;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::db::DbError;
use crate::state::HostNotifier;

/// The notification channel.
pub const CHANNEL: &str = "kumo_host_wake";

/// Starts relaying `hosts`' wake-ups through the database at `url`: a task
/// that sends them (`pg_notify`) and one that listens for the other replicas'.
pub async fn start(
    hosts: &std::sync::Arc<HostNotifier>,
    url: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, DbError> {
    // Tells this replica's own notifications apart (its agents were woken already).
    let origin = crate::auth::random_secret()[..16].to_owned();
    let pool = PgPoolOptions::new().max_connections(2).connect(url).await.map_err(DbError::Connect)?;
    let mut listener = PgListener::connect(url).await.map_err(DbError::Connect)?;
    listener.listen(CHANNEL).await.map_err(DbError::Connect)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<HostId>();
    hosts.relay_to(tx);

    let from = origin.clone();
    let mut stop = shutdown.clone();
    let sender = tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                h = rx.recv() => h,
                _ = stop.changed() => None,
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            while let Ok(h) = rx.try_recv() {
                batch.push(h);
            }
            batch.sort();
            batch.dedup();
            for host in batch {
                let sent = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(format!("{from} {host}"))
                    .execute(&pool)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(%host, "cannot send a wake-up to the other replicas: {e}");
                }
            }
        }
    });

    let hosts = hosts.clone();
    let mut stop = shutdown;
    let receiver = tokio::spawn(async move {
        loop {
            let got = tokio::select! {
                n = listener.try_recv() => n,
                _ = stop.changed() => return,
            };
            match got {
                Ok(Some(n)) => {
                    let Some((sender, host)) = n.payload().split_once(' ') else { continue };
                    if sender == origin {
                        continue;
                    }
                    if let Ok(host) = host.parse::<HostId>() {
                        hosts.wake_here(&host);
                    }
                }
                // The connection dropped (sqlx reconnects at the next call):
                // wake-ups may have been lost, so every waiting agent re-reads.
                Ok(None) => {
                    tracing::warn!("the wake-up listener lost its connection; reconnecting");
                    hosts.wake_all_here();
                }
                Err(e) => {
                    tracing::warn!("the wake-up listener failed: {e}; retrying");
                    hosts.wake_all_here();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(vec![sender, receiver])
}
