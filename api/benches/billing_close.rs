//! The billing figures of the design: closing one hour for 100,000 active
//! resources, and a month's invoice for a project with 1,000 resources, against
//! a real database. SQLite by default; PostgreSQL when `KUMO_BENCH_POSTGRES_URL`
//! names a server (a fresh database is created on it).
//!
//! `cargo bench -p kumo-api --bench billing_close` (`KUMO_BENCH_CLOSE_ONLY=1`: only the two
//! closes, without the month of ledger lines and its invoice).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use kumo_api::db::billing::BillingSettings;
use kumo_api::db::{Backend, Db};
use kumo_billing::invoice::{self, InvoiceStatus};
use kumo_billing::{Calendar, Currency, PriceList, PriceVersion, Rate};

const RESOURCES: usize = 100_000;
const PROJECTS: usize = 100;
const INVOICE_RESOURCES: usize = 1_000;
/// 2026-11-01T00:00:00Z.
const NOV_1: i64 = 1_793_491_200;
const FLAVORS: [&str; 4] = ["mini", "small", "medium", "large"];

/// Marks the start of a phase. It does nothing, but callgrind can cut its counts at it:
/// `valgrind --tool=callgrind --dump-before='*billing_close*phase*' <this bench>` writes one
/// part per phase, each with every thread's instructions (SQLite's worker threads included).
#[inline(never)]
fn phase(name: &str) {
    std::hint::black_box(name);
}

/// This process's CPU time (user and system) so far, in milliseconds: less noisy than the
/// wall clock on a shared machine (PostgreSQL's own work is not in it).
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command (which may hold spaces) start after its closing ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 a second here).
    (fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()) * 10
}

fn placeholders(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", (0..cols).map(|c| format!("${}", r * cols + c + 1)).collect::<Vec<_>>().join(",")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Rows per seeding statement (see `db::billing` for why SQLite's is small).
fn batch(db: &Db) -> usize {
    match db.backend() {
        Backend::Sqlite => 25,
        Backend::Postgres => 200,
    }
}

fn project(n: usize) -> String {
    format!("prj-{:017x}", n % PROJECTS)
}

fn instance(n: usize) -> String {
    format!("i-{n:017x}")
}

/// The database to bench on, what keeps it (a temp dir, or the PostgreSQL database to drop
/// at the end) and its name.
async fn db() -> (Db, Scratch, &'static str) {
    match std::env::var("KUMO_BENCH_POSTGRES_URL") {
        Ok(base) => {
            use sqlx::Connection;
            sqlx::any::install_default_drivers();
            let name = format!("kumo_bench_{}", std::process::id());
            let mut admin = sqlx::AnyConnection::connect(&base).await.expect("postgres");
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
            let (prefix, _) = base.rsplit_once('/').expect("url has a database");
            let db = Db::connect(&format!("{prefix}/{name}"), 8).await.expect("connect");
            (db, Scratch::Postgres { admin: base, name }, "PostgreSQL")
        }
        Err(_) => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
            (Db::connect(&url, 8).await.expect("connect"), Scratch::Sqlite(dir), "SQLite")
        }
    }
}

/// Where a bench's database lives, removed by [`Scratch::remove`].
enum Scratch {
    Sqlite(tempfile::TempDir),
    Postgres { admin: String, name: String },
}

impl Scratch {
    async fn remove(self, db: Db) {
        db.pool().close().await;
        match self {
            Scratch::Sqlite(dir) => dir.close().expect("remove the temp dir"),
            Scratch::Postgres { admin, name } => {
                use sqlx::Connection;
                let mut admin = sqlx::AnyConnection::connect(&admin).await.expect("postgres");
                sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .expect("drop database");
            }
        }
    }
}

async fn seed(db: &Db, hour: i64) {
    let pool = db.pool();
    let now = hour * 1000;
    for p in 0..PROJECTS {
        sqlx::query("INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(project(p))
            .bind(format!("tenant-{p}"))
            .bind(now)
            .execute(pool)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO images (id, owner_project_id, name, kind, visibility, state, created_at) \
         VALUES ('ami-00000000000000001', $1, 'tiny', 'kernel', 'public', 'active', $2)",
    )
    .bind(project(0))
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    let ids: Vec<usize> = (0..RESOURCES).collect();
    let mut tx = db.begin_write().await.unwrap();
    for chunk in ids.chunks(batch(db)) {
        let sql = format!(
            "INSERT INTO instances (id, project_id, name, flavor_name, vcpus, memory_mib, disk_gib, image_id, state, \
             desired, generation, created_by, created_at, updated_at, seq) VALUES {}",
            placeholders(chunk.len(), 15)
        );
        let mut q = sqlx::query(&sql);
        for n in chunk {
            q = q
                .bind(instance(*n))
                .bind(project(*n))
                .bind(format!("vm-{n}"))
                .bind(FLAVORS[n % 4])
                .bind(1i64)
                .bind(512i64)
                .bind(1i64)
                .bind("ami-00000000000000001")
                .bind("running")
                .bind("running")
                .bind(1i64)
                .bind("bench")
                .bind(now)
                .bind(now)
                .bind(format!("{now:015}-{}", instance(*n)));
        }
        q.execute(&mut *tx).await.unwrap();
        // Each instance was confirmed running at some second of the hour.
        let sql = format!(
            "INSERT INTO events (project_id, resource_type, resource_id, at, actor, action, detail) VALUES {}",
            placeholders(chunk.len(), 7)
        );
        let mut q = sqlx::query(&sql);
        for n in chunk {
            q = q
                .bind(project(*n))
                .bind("instance")
                .bind(instance(*n))
                .bind(now + (*n as i64 % 3600) * 1000)
                .bind("agent:bench")
                .bind("state_changed")
                .bind(
                    r#"{"event":"observed_running","from":"building","to":"running","desired":"running","generation":1,"reason":null}"#,
                );
        }
        q.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    sqlx::query("INSERT INTO billing_clock (id, next_open_hour, event_cursor, updated_at) VALUES (1, $1, 0, $1)")
        .bind(now)
        .execute(pool)
        .await
        .unwrap();
}

/// A month of hourly lines for the 1,000 resources of one project, written straight into the ledger.
async fn seed_month(db: &Db, project_id: &str, month_start: i64) -> usize {
    let mut tx = db.begin_write().await.unwrap();
    let mut rows = Vec::new();
    for r in 0..INVOICE_RESOURCES {
        for h in 0..720i64 {
            rows.push((format!("i-b{r:016x}"), month_start + h * 3600));
        }
    }
    for chunk in rows.chunks(batch(db)) {
        let sql = format!(
            "INSERT INTO billing_lines (project_id, resource_type, resource_id, item, hour, usage_hour, seconds, \
             unit_seconds, unit_price_micro, uncapped, amount, capped, price_version_id, currency, created_at) VALUES {}",
            placeholders(chunk.len(), 15)
        );
        let mut q = sqlx::query(&sql);
        for (id, hour) in chunk {
            let capped = (hour / 3600) % 24 >= 20;
            q = q
                .bind(project_id.to_owned())
                .bind("instance")
                .bind(id.clone())
                .bind("flavor:small")
                .bind(hour * 1000)
                .bind(hour * 1000)
                .bind(3600i64)
                .bind(3600i64)
                .bind(5_000_000i64)
                .bind(5i64)
                .bind(if capped { 0i64 } else { 5 })
                .bind(i64::from(capped))
                .bind(2i64)
                .bind("JPY")
                .bind(hour * 1000);
        }
        q.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    rows.len()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (db, scratch, backend) = db().await;
    let hour = NOV_1 + 10 * 3600;
    let started = Instant::now();
    seed(&db, hour).await;
    println!(
        "[{backend}] seeded {RESOURCES} running instances and their events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let settings = BillingSettings { calendar: Calendar::UTC, currency: Currency::JPY, tax_rate_bp: 1000 };
    let prices = PriceList::new(FLAVORS.iter().enumerate().map(|(i, f)| PriceVersion {
        id: i as i64 + 1,
        item: format!("flavor:{f}").parse().unwrap(),
        effective_from: 0,
        unit_price: Rate::from_minor(5 << i),
        daily_cap: Some(100 << i),
        monthly_cap: Some(1500 << i),
        charge_stopped: false,
    }));

    phase("close first hour");
    let (started, cpu) = (Instant::now(), cpu_ms());
    let first = db.close_billing_hour(hour, &settings, &prices).await.unwrap().expect("closed");
    println!(
        "[{backend}] close_hour, first hour ({} resources appear from events): {} lines, {} meters in {:.3} s \
         ({} ms of this process's CPU)",
        RESOURCES,
        first.lines,
        first.meters,
        started.elapsed().as_secs_f64(),
        cpu_ms() - cpu
    );
    phase("close steady hour");
    let (started, cpu) = (Instant::now(), cpu_ms());
    let steady = db.close_billing_hour(hour + 3600, &settings, &prices).await.unwrap().expect("closed");
    println!(
        "[{backend}] close_hour, steady state ({} metered resources, no events): {} lines in {:.3} s \
         ({} ms of this process's CPU)",
        RESOURCES,
        steady.lines,
        started.elapsed().as_secs_f64(),
        cpu_ms() - cpu
    );
    phase("invoice");
    let again = db.close_billing_hour(hour + 3600, &settings, &prices).await.unwrap();
    assert!(again.is_none(), "a closed hour cannot close twice");
    if std::env::var_os("KUMO_BENCH_CLOSE_ONLY").is_some() {
        scratch.remove(db).await;
        return;
    }

    let big = project(0);
    let started = Instant::now();
    let n = seed_month(&db, &big, NOV_1 - 30 * 86_400).await;
    println!(
        "[{backend}] seeded {n} ledger lines (1,000 resources x 720 hours) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let prev = Calendar::UTC.month_of(NOV_1 - 1);
    let (from, to) = (Calendar::UTC.start_of(prev), Calendar::UTC.end_of(prev));
    let started = Instant::now();
    let lines = db.invoice_lines(&big, from, to).await.unwrap();
    let inv = invoice::build(&big, prev, Currency::JPY, 1000, InvoiceStatus::Final, lines);
    let csv = invoice::to_csv(&inv, 3600);
    println!(
        "[{backend}] invoice for {prev} of a project with {INVOICE_RESOURCES} resources ({n} ledger lines): {} invoice lines, total {} in {:.3} s ({} bytes of CSV)",
        inv.lines.len(),
        inv.total,
        started.elapsed().as_secs_f64(),
        csv.len()
    );
    scratch.remove(db).await;
}
