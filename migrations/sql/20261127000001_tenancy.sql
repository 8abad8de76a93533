-- Tenancy foundations: the runtime role, the tenant context, cells, tenants, keys, origins
-- and the transactional outbox.
--
-- Every table holding tenant data has a tenant_id column and row-level security, enabled
-- and FORCEd, with policies that compare against the per-transaction tenant context. With
-- no context set, the policies match nothing: access fails closed.

-- The role services connect as at runtime: not the owner of any table, not a superuser,
-- no BYPASSRLS. Roles are cluster-wide and parallel test databases race to create it.
DO $$
BEGIN
    CREATE ROLE nudge_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

-- The tenant the current transaction acts for, set with
-- `SELECT set_config('nudge.tenant_id', <uuid>, true)`; NULL when unset or empty.
CREATE FUNCTION nudge_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('nudge.tenant_id', true), '')::uuid $$;

-- Data-plane cells. Platform-owned: no tenant data.
CREATE TABLE cells (
    cell_id     text PRIMARY KEY CHECK (cell_id ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
    tier        text NOT NULL CHECK (tier IN ('shared', 'dedicated')),
    public_url  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenants (
    tenant_id   uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    state       text NOT NULL CHECK (state IN ('pending', 'provisioning', 'active', 'suspended', 'offboarding', 'deleted')),
    isolation   text NOT NULL DEFAULT 'shared' CHECK (isolation IN ('shared', 'dedicated')),
    cell_id     text REFERENCES cells (cell_id),
    -- Increases with every change published to the cells.
    revision    bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    tenant_id       uuid NOT NULL REFERENCES tenants (tenant_id),
    key_id          uuid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('publishable', 'secret')),
    -- Publishable keys are public by design and stored as they are.
    publishable_key text,
    -- Secret keys are stored as SHA-256 only, with a visible prefix to tell them apart.
    secret_hash     bytea,
    visible_prefix  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    PRIMARY KEY (tenant_id, key_id),
    CHECK ((kind = 'publishable') = (publishable_key IS NOT NULL)),
    CHECK ((kind = 'secret') = (secret_hash IS NOT NULL AND length(secret_hash) = 32))
);

CREATE TABLE tenant_origins (
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    origin      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, origin)
);

-- Records waiting to be published to Kafka, written in the same transaction as the change
-- they announce. Platform-owned delivery queue: the tenant appears only inside the record.
CREATE TABLE outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic         text NOT NULL,
    record_key    bytea NOT NULL,
    -- NULL publishes a tombstone.
    payload       bytea,
    schema_name   text NOT NULL,
    schema_version integer NOT NULL,
    traceparent   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Row-level security on every tenant table, forced so even the owner is subject to it.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'api_keys', 'tenant_origins'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = nudge_current_tenant()) '
            'WITH CHECK (tenant_id = nudge_current_tenant())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO nudge_app', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE ON cells TO nudge_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO nudge_app;
GRANT EXECUTE ON FUNCTION nudge_current_tenant() TO nudge_app;
