-- Agent SVID renewal in two steps, SQLite flavour. Keep in step with
-- ../postgres/0004_agent_pending_serial.sql.
-- A renewal records the new SVID as pending; the current one stays accepted until the agent
-- first presents the new one, which then becomes current. So an agent whose renewal answer was
-- lost keeps working with the SVID it holds and simply renews again.
ALTER TABLE agents ADD COLUMN pending_serial TEXT;
ALTER TABLE agents ADD COLUMN pending_svid_expires_at INTEGER;
