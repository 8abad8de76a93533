-- The usage ledger: each store's usage per hour and meter, the source of truth billing reads.
-- A cell's report is counted once (by its id, in `usage_reports`) into the hour it began in,
-- however late it arrives: `events`, `predictions`, `interventions` add up; `peak_connections`
-- keeps the highest.
CREATE TABLE usage_ledger (
    tenant_id  uuid NOT NULL,
    hour       timestamptz NOT NULL CHECK (date_trunc('hour', hour) = hour),
    meter      text NOT NULL CHECK (meter IN ('events', 'predictions', 'interventions', 'peak_connections')),
    quantity   bigint NOT NULL CHECK (quantity >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, hour, meter)
);
ALTER TABLE usage_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_ledger FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_ledger
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT, UPDATE ON usage_ledger TO nudge_app;

ALTER TABLE usage_reports
    ADD COLUMN predictions bigint NOT NULL DEFAULT 0 CHECK (predictions >= 0),
    ADD COLUMN interventions bigint NOT NULL DEFAULT 0 CHECK (interventions >= 0),
    ADD COLUMN peak_connections bigint NOT NULL DEFAULT 0 CHECK (peak_connections >= 0);

-- Reports for a store that does not exist or is deleted, or with impossible times or counts:
-- kept apart, counted, billed to no one (a platform table: the store it names is only a
-- claim).
CREATE TABLE usage_quarantine (
    report_id      text PRIMARY KEY CHECK (length(report_id) BETWEEN 1 AND 200),
    claimed_tenant text NOT NULL CHECK (length(claimed_tenant) <= 200),
    cell_id        text NOT NULL CHECK (length(cell_id) <= 200),
    reason         text NOT NULL CHECK (reason IN ('unknown_tenant', 'deleted_tenant', 'invalid_report')),
    report         bytea NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT ON usage_quarantine TO nudge_app;
