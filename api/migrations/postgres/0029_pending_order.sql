-- The scheduler takes pending instances oldest first (`WHERE state = 'pending' ORDER BY seq
-- LIMIT n`): an index on (state, seq) reads the first n instead of sorting every pending one.
-- It serves every lookup by state too, so it replaces the index on state alone.
CREATE INDEX instances_state_seq ON instances(state, seq);
DROP INDEX instances_state;
