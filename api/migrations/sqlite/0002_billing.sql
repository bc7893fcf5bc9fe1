-- Billing (SQLite): price versions, the append-only ledger, meters and the close watermark.
-- Keep in step with ../postgres/0002_billing.sql; released migrations are never edited.
-- Money is integer minor units; unit prices are millionths of a minor unit per unit-hour.
-- Times are integer milliseconds since the Unix epoch.

CREATE TABLE price_versions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    item             TEXT NOT NULL,
    effective_from   BIGINT NOT NULL,
    unit_price_micro BIGINT NOT NULL CHECK (unit_price_micro >= 0),
    daily_cap        BIGINT CHECK (daily_cap >= 0),
    monthly_cap      BIGINT CHECK (monthly_cap >= 0),
    charge_stopped   BIGINT NOT NULL,
    created_by       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    UNIQUE (item, effective_from)
);

-- One line per (resource, item, hour written, usage hour): the idempotency key is
-- the primary key (the table is clustered on it, so a line costs one key insert
-- plus the project index). Lines are only ever inserted (ON CONFLICT DO NOTHING),
-- never updated or deleted.
CREATE TABLE billing_lines (
    project_id       TEXT NOT NULL,
    resource_type    TEXT NOT NULL,
    resource_id      TEXT NOT NULL,
    item             TEXT NOT NULL,
    hour             BIGINT NOT NULL,
    usage_hour       BIGINT NOT NULL,
    seconds          BIGINT NOT NULL,
    unit_seconds     BIGINT NOT NULL,
    unit_price_micro BIGINT NOT NULL,
    uncapped         BIGINT NOT NULL,
    amount           BIGINT NOT NULL,
    capped           BIGINT NOT NULL,
    price_version_id BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (resource_id, item, hour, usage_hour)
) WITHOUT ROWID;
CREATE INDEX billing_lines_project_hour ON billing_lines(project_id, hour);

-- Each metered resource's meter at the start of the next open hour, with what it
-- was charged in its current day and month (for the caps). Rewritten at every close.
CREATE TABLE billing_meters (
    resource_id   TEXT PRIMARY KEY,
    resource_type TEXT NOT NULL,
    project_id    TEXT NOT NULL,
    item          TEXT NOT NULL,
    meter         TEXT NOT NULL,
    quantity      BIGINT NOT NULL,
    day_start     BIGINT NOT NULL,
    day_amount    BIGINT NOT NULL,
    month_start   BIGINT NOT NULL,
    month_amount  BIGINT NOT NULL
);

-- The watermark: every hour before next_open_hour is closed. A close advances it
-- with a compare-and-swap in the same transaction as its lines, so two controllers
-- never close one hour twice and a crash mid-close leaves nothing half-written.
CREATE TABLE billing_clock (
    id             BIGINT PRIMARY KEY CHECK (id = 1),
    next_open_hour BIGINT NOT NULL,
    event_cursor   BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- The tax rate and currency a month was closed with, so its invoice never changes.
CREATE TABLE billing_months (
    month       TEXT PRIMARY KEY,
    currency    TEXT NOT NULL,
    tax_rate_bp BIGINT NOT NULL,
    closed_at   BIGINT NOT NULL
);

CREATE INDEX events_billing ON events(action, resource_type, at);
