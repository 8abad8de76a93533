-- A store's messaging policy: the rules every campaign send obeys (per channel: the
-- global frequency cap, quiet hours in the shopper's time zone, whether consent is
-- required) and the store's global holdout. One row per store that set one; a store
-- without a row has the defaults (`nudge_campaigns::policy::MessagingPolicy::default`).
-- The cells learn it with the store's record on `control.tenants.v1`.
CREATE TABLE messaging_policies (
    tenant_id  uuid PRIMARY KEY REFERENCES tenants (tenant_id),
    policy     jsonb NOT NULL,
    -- The member who set it (an account id).
    updated_by text NOT NULL CHECK (length(updated_by) BETWEEN 1 AND 255),
    updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE messaging_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE messaging_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON messaging_policies
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT, UPDATE ON messaging_policies TO nudge_app;
