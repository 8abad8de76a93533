-- A store's open shopper sockets at sampled instants, summed over the gateway processes
-- that hold them: each gateway samples its sockets per store at the same wall-clock
-- instants (multiples of the cells' `usage.connection_sample_ms`), and each usage report's
-- samples are added here once (the report is new to `usage_reports`). The hour's
-- `peak_connections` in the ledger is the highest sum of the hour. Kept 35 days, like the
-- hours still sent to Stripe.
CREATE TABLE connection_samples (
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    at          timestamptz NOT NULL,
    connections bigint NOT NULL CHECK (connections >= 0),
    PRIMARY KEY (tenant_id, at)
);
ALTER TABLE connection_samples ENABLE ROW LEVEL SECURITY;
ALTER TABLE connection_samples FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON connection_samples
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON connection_samples TO nudge_app;
