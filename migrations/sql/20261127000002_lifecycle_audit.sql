-- Tenant lifecycle audit: one row per state change, never updated or deleted.

CREATE TABLE tenant_audit (
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    -- `system:<job>` or `operator:<name>`.
    actor       text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    from_state  text CHECK (from_state IN ('pending', 'provisioning', 'active', 'suspended', 'offboarding', 'deleted')),
    to_state    text NOT NULL CHECK (to_state IN ('pending', 'provisioning', 'active', 'suspended', 'offboarding', 'deleted')),
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, seq)
);

ALTER TABLE tenant_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_audit FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_audit
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());

-- Append-only twice over: the runtime role may only insert and read, and a trigger refuses
-- changes from anyone, the owner included.
GRANT SELECT, INSERT ON tenant_audit TO nudge_app;

CREATE FUNCTION tenant_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'tenant_audit is append-only' USING ERRCODE = 'insufficient_privilege'; END $$;

CREATE TRIGGER tenant_audit_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON tenant_audit
    FOR EACH STATEMENT EXECUTE FUNCTION tenant_audit_append_only();
