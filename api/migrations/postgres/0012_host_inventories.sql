-- What each host's agent last reported holding (for `kumo admin audit`),
-- whether an audit waits for a fresh report, and the repairs an audit asked
-- of the agent that it has not been handed yet.
CREATE TABLE host_inventories (
    host_id     TEXT PRIMARY KEY REFERENCES hosts(id),
    -- The agent's clock when it listed the host (ms); NULL until the first report.
    taken_at    BIGINT,
    -- The controller's clock when the report arrived (ms).
    received_at BIGINT,
    -- The inventory as JSON (kumo_wire::inventory::HostInventory).
    body        TEXT,
    -- Set by an audit that wants a report newer than this (ms).
    wanted_at   BIGINT,
    -- JSON list of kumo_wire::inventory::Repair, handed out with the next sync.
    repairs     TEXT NOT NULL DEFAULT '[]'
);
