-- Merchant accounts and their memberships in stores; named, scoped, revocable API keys.

-- The account the current transaction acts for, set only after the account proved who it
-- is (password login, token refresh); NULL when unset.
CREATE FUNCTION nudge_current_account() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('nudge.account_id', true), '')::uuid $$;
GRANT EXECUTE ON FUNCTION nudge_current_account() TO nudge_app;

-- A person, across the stores they belong to. Not tenant data: an account exists before
-- and beyond any one store, and login finds it by e-mail.
CREATE TABLE accounts (
    account_id     uuid PRIMARY KEY,
    email          text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    -- argon2id, PHC string format.
    password_hash  text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_email_key UNIQUE (email)
);
GRANT SELECT, INSERT, UPDATE ON accounts TO nudge_app;

CREATE TABLE memberships (
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    account_id  uuid NOT NULL REFERENCES accounts (account_id),
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'analyst', 'viewer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, account_id)
);
ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memberships
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
-- An authenticated account may see (only see) its own memberships, to choose a store.
CREATE POLICY own_memberships ON memberships FOR SELECT
    USING (account_id = nudge_current_account());
GRANT SELECT, INSERT, UPDATE, DELETE ON memberships TO nudge_app;

ALTER TABLE api_keys
    ADD COLUMN name       text NOT NULL DEFAULT 'default' CHECK (length(name) BETWEEN 1 AND 100),
    -- What a secret key may do: 'events:write' (server-side ingest), 'admin' (the API).
    ADD COLUMN scopes     text[] NOT NULL DEFAULT '{}',
    ADD COLUMN created_by uuid REFERENCES accounts (account_id);
UPDATE api_keys SET scopes = ARRAY['events:write'] WHERE kind = 'secret';
