-- The dedicated-database escape hatch.
--
-- Every database (the main one and each dedicated one) has this same schema. The main
-- database is also the registry: accounts, memberships, the list of dedicated databases and
-- which tenant lives in which. A tenant's own rows (its tenants row, keys, origins, audit log,
-- outbox records) live in its database, shared or dedicated.

-- Memberships stay in the registry while the tenant row may move to a dedicated database,
-- and accounts stay in the registry while the keys they created may move: these references
-- cross databases, so they are checked by the code that writes them, not by foreign keys.
ALTER TABLE memberships DROP CONSTRAINT memberships_tenant_id_fkey;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_created_by_fkey;

-- Dedicated databases, for the relay and for operators. Platform-owned.
CREATE TABLE databases (
    name        text PRIMARY KEY CHECK (name ~ '^nudge_t_[0-9a-f]{32}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT ON databases TO nudge_app;

-- Where a tenant lives when not in the main database.
CREATE TABLE tenant_routes (
    tenant_id   uuid PRIMARY KEY,
    database    text NOT NULL REFERENCES databases (name),
    moved_at    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tenant_routes ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_routes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_routes
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT ON tenant_routes TO nudge_app;

-- A tenant moved out of this database: writers that still reach here must go to
-- `moved_to` instead. Written by the mover (owner role) while it holds the tenant's
-- advisory lock, so no writer is half-way through a transaction here when it appears.
CREATE TABLE tenant_fences (
    tenant_id   uuid PRIMARY KEY,
    moved_to    text NOT NULL,
    fenced_at   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tenant_fences ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_fences FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_fences
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT ON tenant_fences TO nudge_app;

-- A moved tenant's audit log is copied to its dedicated database, then purged here. The
-- purge is the one exception to append-only, and only the owner role can use it: the
-- runtime role has no DELETE on the table at all.
CREATE OR REPLACE FUNCTION tenant_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE' AND coalesce(current_setting('nudge.purge_moved_tenant', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'tenant_audit is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
