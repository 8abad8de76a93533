-- Suppressed shoppers (erased, or opted out): their events are dropped at ingest.
CREATE TABLE suppressions (
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    shopper_id  text NOT NULL CHECK (length(shopper_id) BETWEEN 1 AND 64),
    reason      text NOT NULL CHECK (reason IN ('erasure', 'opt_out', 'merchant')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, shopper_id)
);
ALTER TABLE suppressions ENABLE ROW LEVEL SECURITY;
ALTER TABLE suppressions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON suppressions
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT, DELETE ON suppressions TO nudge_app;

-- Usage reports from the cells (usage.v1), one row per report: a redelivered report is
-- recognised by its id and counted once.
CREATE TABLE usage_reports (
    tenant_id   uuid NOT NULL,
    report_id   text NOT NULL,
    cell_id     text NOT NULL,
    start_at    timestamptz NOT NULL,
    end_at      timestamptz NOT NULL,
    accepted    bigint NOT NULL CHECK (accepted >= 0),
    -- {"rate": n, "quota": n, "schema": n, "suppressed": n, "duplicate": n}
    dropped     jsonb NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, report_id)
);
CREATE INDEX usage_reports_by_time ON usage_reports (tenant_id, end_at);
ALTER TABLE usage_reports ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_reports FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_reports
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT ON usage_reports TO nudge_app;
