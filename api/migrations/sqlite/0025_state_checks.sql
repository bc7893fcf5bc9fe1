-- Lifecycle states are a closed set (issue 15): the state columns of
-- instances, volumes and snapshots (and instances.desired) refuse any value
-- that is not one of wire's states (InstanceState, DesiredPower, VolumeState,
-- SnapshotState); api/tests/lifecycle.rs checks every state is accepted and a
-- stray one refused. Keep in step with ../postgres/0025_state_checks.sql and
-- with the enums in wire (a new state needs a migration).
-- SQLite cannot add a CHECK to an existing table without rebuilding it (and
-- every foreign key and index that names it); triggers refuse the same writes.
CREATE TRIGGER instances_state_valid_insert BEFORE INSERT ON instances
WHEN NEW.state NOT IN ('pending', 'building', 'running', 'stopping', 'stopped', 'rebooting', 'deleting', 'deleted', 'error', 'unknown') OR NEW.desired NOT IN ('running', 'stopped', 'deleted')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: instances_state_valid');
END;
CREATE TRIGGER instances_state_valid_update BEFORE UPDATE OF state, desired ON instances
WHEN NEW.state NOT IN ('pending', 'building', 'running', 'stopping', 'stopped', 'rebooting', 'deleting', 'deleted', 'error', 'unknown') OR NEW.desired NOT IN ('running', 'stopped', 'deleted')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: instances_state_valid');
END;
CREATE TRIGGER volumes_state_valid_insert BEFORE INSERT ON volumes
WHEN NEW.state NOT IN ('creating', 'available', 'attaching', 'in-use', 'detaching', 'extending', 'deleting', 'deleted', 'error')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: volumes_state_valid');
END;
CREATE TRIGGER volumes_state_valid_update BEFORE UPDATE OF state ON volumes
WHEN NEW.state NOT IN ('creating', 'available', 'attaching', 'in-use', 'detaching', 'extending', 'deleting', 'deleted', 'error')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: volumes_state_valid');
END;
CREATE TRIGGER snapshots_state_valid_insert BEFORE INSERT ON snapshots
WHEN NEW.state NOT IN ('creating', 'available', 'deleting', 'deleted', 'error')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: snapshots_state_valid');
END;
CREATE TRIGGER snapshots_state_valid_update BEFORE UPDATE OF state ON snapshots
WHEN NEW.state NOT IN ('creating', 'available', 'deleting', 'deleted', 'error')
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: snapshots_state_valid');
END;
