-- Campaigns: what a store's interventions are. A campaign has a lifecycle (`draft` →
-- `active` ⇄ `paused`, any of them → `archived`, which is final) and versions: every save
-- is a new immutable version (`campaign_versions`), so a decision can name the exact
-- definition it followed. `campaign_audit` records who created, changed and moved each one.
CREATE TABLE campaigns (
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    campaign_id uuid NOT NULL,
    state       text NOT NULL DEFAULT 'draft' CHECK (state IN ('draft', 'active', 'paused', 'archived')),
    -- The version in force (the latest saved).
    version     integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    -- Raised by every announcement to the cells, which ignore a record older than one they
    -- applied.
    revision    bigint NOT NULL DEFAULT 0 CHECK (revision >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign_id)
);
CREATE TABLE campaign_versions (
    tenant_id   uuid NOT NULL,
    campaign_id uuid NOT NULL,
    version     integer NOT NULL CHECK (version >= 1),
    spec        jsonb NOT NULL,
    -- The member who saved it (an account id).
    saved_by    text NOT NULL CHECK (length(saved_by) BETWEEN 1 AND 255),
    saved_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign_id, version),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns (tenant_id, campaign_id)
);
CREATE TABLE campaign_audit (
    tenant_id   uuid NOT NULL,
    campaign_id uuid NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL CHECK (length(actor) BETWEEN 1 AND 255),
    -- `created`, `saved` (a new version), or the state moved to.
    action      text NOT NULL CHECK (action IN ('created', 'saved', 'active', 'paused', 'archived')),
    version     integer NOT NULL,
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns (tenant_id, campaign_id)
);
CREATE INDEX campaign_audit_by_campaign ON campaign_audit (tenant_id, campaign_id, at);

ALTER TABLE campaigns ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaigns FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON campaigns
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT, UPDATE ON campaigns TO nudge_app;

ALTER TABLE campaign_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaign_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON campaign_versions
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
-- Versions are never changed.
GRANT SELECT, INSERT ON campaign_versions TO nudge_app;

ALTER TABLE campaign_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaign_audit FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON campaign_audit
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT ON campaign_audit TO nudge_app;
