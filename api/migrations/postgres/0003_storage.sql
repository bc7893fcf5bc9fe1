-- Volumes, snapshots and quotas (PostgreSQL). Times are integer milliseconds since the Unix epoch.
-- Keep in step with ../sqlite/0003_storage.sql; released migrations are never edited.

-- The guest-visible size of a disk image, read by qemu-img when it was uploaded.
ALTER TABLE images ADD COLUMN virtual_size_bytes BIGINT;

-- An instance launched with local volumes must run on the host that holds them.
ALTER TABLE instances ADD COLUMN required_host_id TEXT REFERENCES hosts(id);

-- The volume backends a host's agent serves: a JSON list such as ["local","shared"].
ALTER TABLE hosts ADD COLUMN volume_backends TEXT NOT NULL DEFAULT '[]';

CREATE TABLE volumes (
    id                 TEXT PRIMARY KEY,
    project_id         TEXT NOT NULL REFERENCES projects(id),
    name               TEXT NOT NULL,
    size_gib           BIGINT NOT NULL,
    backend            TEXT NOT NULL,
    -- Local volumes: the host that holds the file. Shared volumes: the host doing their work.
    host_id            TEXT REFERENCES hosts(id),
    -- Disk claimed on host_id (local volumes), given back when the volume is deleted.
    claimed_gib        BIGINT NOT NULL DEFAULT 0,
    state              TEXT NOT NULL,
    state_reason       TEXT,
    state_deadline_at  BIGINT,
    -- The desired state: 1 while the tenant keeps the volume, 0 once a delete was asked for.
    present            BIGINT NOT NULL,
    -- The desired attachment.
    instance_id        TEXT REFERENCES instances(id),
    device             TEXT,
    source_snapshot_id TEXT,
    generation         BIGINT NOT NULL,
    applied_generation BIGINT NOT NULL DEFAULT 0,
    stored_bytes       BIGINT,
    created_by         TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    deleted_at         BIGINT
);
CREATE UNIQUE INDEX volumes_project_name ON volumes(project_id, name) WHERE deleted_at IS NULL;
CREATE INDEX volumes_host ON volumes(host_id);
CREATE INDEX volumes_instance ON volumes(instance_id);
CREATE INDEX volumes_state ON volumes(state);

CREATE TABLE snapshots (
    id                 TEXT PRIMARY KEY,
    project_id         TEXT NOT NULL REFERENCES projects(id),
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL,
    volume_id          TEXT REFERENCES volumes(id),
    instance_id        TEXT REFERENCES instances(id),
    image_id           TEXT REFERENCES images(id),
    size_gib           BIGINT NOT NULL,
    backend            TEXT,
    -- The host that takes the snapshot (and keeps it, for local volumes).
    host_id            TEXT REFERENCES hosts(id),
    state              TEXT NOT NULL,
    state_reason       TEXT,
    state_deadline_at  BIGINT,
    present            BIGINT NOT NULL,
    generation         BIGINT NOT NULL,
    applied_generation BIGINT NOT NULL DEFAULT 0,
    stored_bytes       BIGINT,
    created_by         TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    deleted_at         BIGINT
);
CREATE UNIQUE INDEX snapshots_project_name ON snapshots(project_id, name) WHERE deleted_at IS NULL;
CREATE INDEX snapshots_host ON snapshots(host_id);
CREATE INDEX snapshots_state ON snapshots(state);

-- Quota limits: scope 'default' holds the cloud's defaults, a project id that project's own.
-- A resource without a row falls back to the default, then to the built-in default. -1: unlimited.
CREATE TABLE quota_limits (
    scope     TEXT NOT NULL,
    resource  TEXT NOT NULL,
    max_value BIGINT NOT NULL,
    PRIMARY KEY (scope, resource)
);
