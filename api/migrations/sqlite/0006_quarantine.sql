-- The agents' storage quarantine (issue 11): local volume and snapshot files
-- an agent found unlisted and moved aside instead of deleting, as each host
-- last reported them, and the restores admins asked for. Times are integer ms.
-- Keep in step with the other backend's 0006_quarantine.sql; released migrations are never edited.
CREATE TABLE host_quarantine (
    host_id               TEXT NOT NULL REFERENCES hosts(id),
    id                    TEXT NOT NULL,
    kind                  TEXT NOT NULL,
    resource_id           TEXT NOT NULL,
    size_bytes            BIGINT NOT NULL,
    quarantined_at        BIGINT NOT NULL,
    created_here          BIGINT NOT NULL,
    delete_after          BIGINT,
    restore_requested_at  BIGINT,
    PRIMARY KEY (host_id, id)
);
CREATE INDEX host_quarantine_id ON host_quarantine(id);
