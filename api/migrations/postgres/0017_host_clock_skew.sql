-- Issue 12 item 9: how far the host's agent clock is from the controller's,
-- in ms (the agent's clock minus the controller's at its last sync; positive
-- when the agent is ahead). NULL until an agent that sends its clock syncs.
ALTER TABLE hosts ADD COLUMN clock_skew_ms BIGINT;
