-- EC2 Query API: access keys, tags, RunInstances client tokens. Times are integer milliseconds.
-- Keep in step with the other backend's 0005_access_keys.sql; released migrations are never edited.

-- SigV4 needs the secret itself on the server, so it cannot be hashed: it is
-- sealed with AES-256-GCM under a key kept in the controller's data_dir (file
-- ec2-access-key.key, mode 0600), never in the database.
CREATE TABLE access_keys (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users(id),
    project_id        TEXT NOT NULL REFERENCES projects(id),
    -- 12-byte nonce || ciphertext+tag, hex.
    secret_sealed     TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    last_used_at      BIGINT
);
CREATE INDEX access_keys_user ON access_keys(user_id);

-- Tags on any resource (EC2 CreateTags), scoped to the resource's project.
CREATE TABLE tags (
    project_id   TEXT NOT NULL REFERENCES projects(id),
    resource_id  TEXT NOT NULL,
    tag_key      TEXT NOT NULL,
    tag_value    TEXT NOT NULL,
    PRIMARY KEY (project_id, resource_id, tag_key)
);
CREATE INDEX tags_resource ON tags(resource_id);

-- RunInstances idempotency: a client token names one reservation per project.
CREATE TABLE ec2_client_tokens (
    project_id     TEXT NOT NULL REFERENCES projects(id),
    client_token   TEXT NOT NULL,
    action         TEXT NOT NULL,
    reservation_id TEXT NOT NULL,
    -- JSON list of the resource ids the call created.
    resource_ids   TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (project_id, client_token, action)
);
