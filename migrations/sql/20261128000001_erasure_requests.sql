-- GDPR erasure: suppressions by subject digest, legal holds, tracked erasure requests with
-- their per-store steps, signed receipts and an append-only audit trail.

-- A subject digest (`nudge_contracts::subject_digest`) names a suppressed shopper; an erased
-- shopper's id leaves the table, opted-out and merchant suppressions keep it for display.
ALTER TABLE suppressions ADD COLUMN subject_digest text;
-- Every tenant's rows, whatever role applies this (the policy would hide them otherwise).
ALTER TABLE suppressions NO FORCE ROW LEVEL SECURITY;
ALTER TABLE suppressions DROP CONSTRAINT suppressions_pkey;
ALTER TABLE suppressions ALTER COLUMN shopper_id DROP NOT NULL;
UPDATE suppressions
    SET subject_digest = encode(sha256(convert_to('nudge.subject.v1:' || tenant_id::text || ':' || shopper_id, 'UTF8')), 'hex');
UPDATE suppressions SET shopper_id = NULL WHERE reason = 'erasure';
ALTER TABLE suppressions FORCE ROW LEVEL SECURITY;
ALTER TABLE suppressions ALTER COLUMN subject_digest SET NOT NULL;
ALTER TABLE suppressions ADD PRIMARY KEY (tenant_id, subject_digest);
ALTER TABLE suppressions ADD CONSTRAINT suppressions_digest_form CHECK (subject_digest ~ '^[0-9a-f]{64}$');
ALTER TABLE suppressions ADD CONSTRAINT suppressions_erased_keep_no_id CHECK (reason <> 'erasure' OR shopper_id IS NULL);
GRANT UPDATE ON suppressions TO nudge_app;

-- A legal hold stops erasure of one subject, or of the whole store (subject_digest NULL),
-- until released.
CREATE TABLE legal_holds (
    tenant_id      uuid NOT NULL REFERENCES tenants (tenant_id),
    hold_id        uuid NOT NULL,
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    subject_digest text CHECK (subject_digest ~ '^[0-9a-f]{64}$'),
    placed_by      text NOT NULL CHECK (length(placed_by) BETWEEN 1 AND 200),
    placed_at      timestamptz NOT NULL DEFAULT now(),
    released_at    timestamptz,
    PRIMARY KEY (tenant_id, hold_id)
);
ALTER TABLE legal_holds ENABLE ROW LEVEL SECURITY;
ALTER TABLE legal_holds FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON legal_holds
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT, UPDATE ON legal_holds TO nudge_app;

-- One request per subject: filing it again answers the same request (and its receipt).
CREATE TABLE erasure_requests (
    tenant_id      uuid NOT NULL REFERENCES tenants (tenant_id),
    request_id     uuid NOT NULL,
    scope          text NOT NULL CHECK (scope IN ('shopper')),
    subject_digest text NOT NULL CHECK (subject_digest ~ '^[0-9a-f]{64}$'),
    requested_by   text NOT NULL CHECK (length(requested_by) BETWEEN 1 AND 200),
    requested_at   timestamptz NOT NULL DEFAULT now(),
    deadline_at    timestamptz NOT NULL,
    status         text NOT NULL CHECK (status IN ('in_progress', 'completed')),
    completed_at   timestamptz,
    -- The receipt exactly as signed (JSON text), and the vault's signature of it.
    receipt        text,
    signature      text,
    signing_key    text,
    key_version    bigint,
    PRIMARY KEY (tenant_id, request_id),
    UNIQUE (tenant_id, scope, subject_digest),
    CHECK ((status = 'completed') = (receipt IS NOT NULL AND signature IS NOT NULL AND completed_at IS NOT NULL))
);
ALTER TABLE erasure_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE erasure_requests FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON erasure_requests
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT, UPDATE ON erasure_requests TO nudge_app;

-- Every store a request erases from, and what it removed there.
CREATE TABLE erasure_steps (
    tenant_id   uuid NOT NULL,
    request_id  uuid NOT NULL,
    -- `postgres`, `cell:<cell id>`.
    store       text NOT NULL CHECK (length(store) BETWEEN 1 AND 200),
    status      text NOT NULL CHECK (status IN ('pending', 'erased', 'nothing_found')),
    -- Place → how many keys, rows, members or records were removed there.
    removed     jsonb NOT NULL DEFAULT '{}',
    finished_at timestamptz,
    PRIMARY KEY (tenant_id, request_id, store),
    FOREIGN KEY (tenant_id, request_id) REFERENCES erasure_requests (tenant_id, request_id)
);
ALTER TABLE erasure_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE erasure_steps FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON erasure_steps
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT, UPDATE ON erasure_steps TO nudge_app;

-- What happened to erasure requests and legal holds, and who did it: append-only.
CREATE TABLE erasure_audit (
    tenant_id  uuid NOT NULL REFERENCES tenants (tenant_id),
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    request_id uuid,
    -- `account:<id>`, `operator:<name>`, `cell:<id>`, `system`.
    actor      text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    -- `requested`, `repeated`, `refused_legal_hold`, `store_finished`, `completed`,
    -- `hold_placed`, `hold_released`.
    action     text NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    detail     jsonb NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, seq)
);
ALTER TABLE erasure_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE erasure_audit FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON erasure_audit
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT ON erasure_audit TO nudge_app;

-- As for tenant_audit, the one exception is purging a tenant moved to its dedicated database
-- (after its rows were copied there), which only the owner role can do.
CREATE FUNCTION erasure_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE' AND coalesce(current_setting('nudge.purge_moved_tenant', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'erasure_audit is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER erasure_audit_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON erasure_audit
    FOR EACH STATEMENT EXECUTE FUNCTION erasure_audit_append_only();
