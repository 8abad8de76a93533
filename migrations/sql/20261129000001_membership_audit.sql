-- Who changed whose membership of a store, and how: one row per role change or removal,
-- never updated or deleted. It lives with the memberships, in the registry (the main
-- database), and stays there when the store moves to a dedicated database. Accounts are
-- named by id only: no e-mail address is copied into an append-only table.
CREATE TABLE membership_audit (
    tenant_id   uuid NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    -- The member who made the change (the removed member themself when they left).
    actor       uuid NOT NULL,
    account_id  uuid NOT NULL,
    from_role   text NOT NULL CHECK (from_role IN ('owner', 'admin', 'analyst', 'viewer')),
    -- NULL: the membership ended.
    to_role     text CHECK (to_role IN ('owner', 'admin', 'analyst', 'viewer')),
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, seq)
);
ALTER TABLE membership_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE membership_audit FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON membership_audit
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT ON membership_audit TO nudge_app;

CREATE FUNCTION membership_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'membership_audit is append-only' USING ERRCODE = 'insufficient_privilege'; END $$;
CREATE TRIGGER membership_audit_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON membership_audit
    FOR EACH STATEMENT EXECUTE FUNCTION membership_audit_append_only();
