-- A project may refuse a second live instance with the same name (issue 20).
ALTER TABLE projects ADD COLUMN unique_instance_names BIGINT NOT NULL DEFAULT 0;

-- Usage is rounded once per resource, item and month: the meter carries the
-- month's exact running value (rate micro-units × unit-seconds) so each hour
-- charges what its rounding grew by (kumo_billing::money::cumulative_amount).
ALTER TABLE billing_meters ADD COLUMN month_exact BIGINT NOT NULL DEFAULT 0;
