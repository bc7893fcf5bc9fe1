-- Lifecycle states are a closed set (issue 15): the state columns of
-- instances, volumes and snapshots (and instances.desired) refuse any value
-- that is not one of wire's states (InstanceState, DesiredPower, VolumeState,
-- SnapshotState); api/tests/lifecycle.rs checks every state is accepted and a
-- stray one refused. Keep in step with ../sqlite/0025_state_checks.sql and
-- with the enums in wire (a new state needs a migration).
ALTER TABLE instances ADD CONSTRAINT instances_state_valid CHECK (state IN ('pending', 'building', 'running', 'stopping', 'stopped', 'rebooting', 'deleting', 'deleted', 'error', 'unknown'));
ALTER TABLE instances ADD CONSTRAINT instances_desired_valid CHECK (desired IN ('running', 'stopped', 'deleted'));
ALTER TABLE volumes ADD CONSTRAINT volumes_state_valid CHECK (state IN ('creating', 'available', 'attaching', 'in-use', 'detaching', 'extending', 'deleting', 'deleted', 'error'));
ALTER TABLE snapshots ADD CONSTRAINT snapshots_state_valid CHECK (state IN ('creating', 'available', 'deleting', 'deleted', 'error'));
