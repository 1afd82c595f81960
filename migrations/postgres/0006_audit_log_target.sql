-- The audit log by target, PostgreSQL flavour. Keep in step with
-- ../sqlite/0006_audit_log_target.sql.

-- `fedhub audit list --trust-domain TD` (GET /v1/audit?trust_domain=TD) reads the events of
-- one target newest first; without this index it would scan the whole log for a rare target.
CREATE INDEX audit_log_target ON audit_log (target, id);
