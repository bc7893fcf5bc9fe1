-- Issue 18: measured statistics of instances and hosts. Times are integer ms.
-- Keep in step with the other backend's 0030_stats.sql; released migrations are never edited.

-- The newest raw counters each agent reported per subject (an instance or its
-- host): the next report is turned into rates against them (`api/src/stats.rs`).
CREATE TABLE stats_counters (
    subject      TEXT PRIMARY KEY,
    host_id      TEXT NOT NULL,
    sampled_at   BIGINT NOT NULL,   -- the agent's clock
    received_at  BIGINT NOT NULL,   -- the controller's clock
    counters     TEXT NOT NULL      -- JSON: the agent's sample
);
CREATE INDEX stats_counters_host ON stats_counters(host_id);

-- The downsampled history: per subject, one row per minute (`step_secs` 60,
-- kept 25 hours) and one per hour (3600, kept 32 days). Counters are sums of
-- the increases seen in the bucket and `covered_ms` the time they span, so a
-- rate is their quotient; gauges are sums over `samples`.
CREATE TABLE stats_points (
    subject          TEXT NOT NULL,
    step_secs        BIGINT NOT NULL,
    bucket           BIGINT NOT NULL,
    covered_ms       BIGINT NOT NULL,
    samples          BIGINT NOT NULL,
    cpu_used         BIGINT NOT NULL,  -- instances: CPU ns; hosts: busy ticks
    cpu_capacity     BIGINT NOT NULL,  -- instances: vCPUs x ns; hosts: all ticks
    memory_used_kib  BIGINT NOT NULL,  -- sum over samples
    load1_milli      BIGINT NOT NULL,  -- sum over samples (hosts)
    disk_read_bytes  BIGINT NOT NULL,
    disk_write_bytes BIGINT NOT NULL,
    disk_read_ops    BIGINT NOT NULL,
    disk_write_ops   BIGINT NOT NULL,
    net_rx_bytes     BIGINT NOT NULL,
    net_tx_bytes     BIGINT NOT NULL,
    net_rx_packets   BIGINT NOT NULL,
    net_tx_packets   BIGINT NOT NULL,
    PRIMARY KEY (subject, step_secs, bucket)
);
CREATE INDEX stats_points_age ON stats_points(step_secs, bucket);
