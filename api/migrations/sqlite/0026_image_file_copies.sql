-- Replicated image store (issue 19): the controller replicas that keep image
-- files, and which replica holds a copy of which file with which checksum. A
-- replica asked for a file it lacks fetches it from a replica listed here,
-- verifying the checksum against image_files. No foreign key to images: a
-- one-shot upload stores its file before the image row exists, and copies of
-- a deleted image are removed by each replica's sweep after the rows go.
-- Keep in step with ../postgres/0026_image_file_copies.sql.
CREATE TABLE controller_replicas (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    last_seen_ms BIGINT NOT NULL
);

CREATE TABLE image_file_copies (
    image_id TEXT NOT NULL,
    role TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    stored_ms BIGINT NOT NULL,
    PRIMARY KEY (image_id, role, replica_id)
);

CREATE INDEX image_file_copies_replica ON image_file_copies (replica_id);
