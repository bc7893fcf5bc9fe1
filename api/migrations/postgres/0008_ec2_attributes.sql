-- EC2 state that has no native counterpart. Times are integer milliseconds.
-- Keep in step with the other backend's 0008_ec2_attributes.sql; released migrations are never edited.

-- The device name an AttachVolume caller asked for (`/dev/sdf`), shown back
-- by EC2 while the volume stays attached to that instance; the guest's own
-- name (`volumes.device`, `vdb`) may differ, as on AWS's Nitro instances.
CREATE TABLE ec2_volume_devices (
    volume_id   TEXT PRIMARY KEY REFERENCES volumes(id),
    instance_id TEXT NOT NULL REFERENCES instances(id),
    device      TEXT NOT NULL
);
CREATE INDEX ec2_volume_devices_instance ON ec2_volume_devices(instance_id);

-- ModifyInstanceAttribute's flags. No row: AWS's defaults.
CREATE TABLE ec2_instance_attributes (
    instance_id              TEXT PRIMARY KEY REFERENCES instances(id),
    disable_api_termination  BIGINT NOT NULL DEFAULT 0,
    disable_api_stop         BIGINT NOT NULL DEFAULT 0,
    -- 'stop' or 'terminate'.
    shutdown_behavior        TEXT NOT NULL DEFAULT 'stop',
    source_dest_check        BIGINT NOT NULL DEFAULT 1
);

-- EC2's DeregisterImage of an image instances still use: hidden from listings
-- and launches at once, deleted (files and all) when its last instance is.
ALTER TABLE images ADD COLUMN deregistered_at BIGINT;

-- ModifyVolume: the last size change of each volume (DescribeVolumesModifications).
CREATE TABLE ec2_volume_modifications (
    volume_id     TEXT PRIMARY KEY REFERENCES volumes(id),
    original_size BIGINT NOT NULL,
    target_size   BIGINT NOT NULL,
    start_time    BIGINT NOT NULL
);
