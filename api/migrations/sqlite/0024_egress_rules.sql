-- Security-group rules get a direction (issue 13): 'ingress' rules allow
-- inbound traffic from their cidr / source_group_id, 'egress' rules allow
-- outbound traffic to them (the columns keep their names; for an egress rule
-- they are the destination). Every rule made before is inbound.
-- Keep in step with ../postgres/0024_egress_rules.sql.
ALTER TABLE security_group_rules ADD COLUMN direction TEXT NOT NULL DEFAULT 'ingress'
    CHECK (direction IN ('ingress', 'egress'));

-- AWS's default egress rule (every protocol to 0.0.0.0/0) for every group
-- that exists: outbound was open until now and stays open until the rule is
-- removed. Its id is 'sgr-' and the group's hex digits, the id EC2 showed
-- for the fixed allow-all egress rule before.
INSERT INTO security_group_rules (id, group_id, protocol, port_first, port_last, cidr, source_group_id, created_at, direction)
    SELECT 'sgr-' || substr(g.id, 4), g.id, 'any', NULL, NULL, '0.0.0.0/0', NULL, g.created_at, 'egress'
    FROM security_groups g;
