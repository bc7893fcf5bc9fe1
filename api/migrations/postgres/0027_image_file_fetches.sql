-- The replication worker's claims (issue 19): a replica that sets out to copy
-- a file to bring it to `image_copies` claims it here first, in a transaction
-- that counts the live copies and the claims of the other live replicas, so
-- replicas running the worker at once never copy a file beyond
-- `image_copies`. A claim ends with its fetch, whatever the outcome; the
-- claim of a replica that is gone no longer counts.
-- Keep in step with ../sqlite/0027_image_file_fetches.sql.
CREATE TABLE image_file_fetches (
    image_id TEXT NOT NULL,
    role TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    claimed_ms BIGINT NOT NULL,
    PRIMARY KEY (image_id, role, replica_id)
);
