-- Issue 12, security hardening.

-- API tokens revoked before they expire (panel logout, DELETE /v1/auth/tokens):
-- the SHA-256 of the token and when it would have expired anyway (ms since
-- the epoch); rows past that are deleted.
CREATE TABLE revoked_tokens (
    token_hash TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens(expires_at);

-- The new quotas (networks, security groups, rules per group, key pairs,
-- images, image GiB) stay unlimited for projects that bootstrap made
-- unlimited (the operator's own), as they would be on a new cloud.
INSERT INTO quota_limits (scope, resource, max_value)
SELECT q.scope, r.resource, -1
FROM quota_limits q
CROSS JOIN (
    SELECT 'networks' AS resource UNION ALL SELECT 'security_groups' UNION ALL SELECT 'rules_per_group'
    UNION ALL SELECT 'key_pairs' UNION ALL SELECT 'images' UNION ALL SELECT 'image_gib'
) r
WHERE q.scope <> 'default' AND q.resource = 'instances' AND q.max_value = -1
  AND NOT EXISTS (SELECT 1 FROM quota_limits o WHERE o.scope = q.scope AND o.resource = r.resource);
