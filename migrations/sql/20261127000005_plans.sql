-- The plan a store is on; its limits are defined in code (tenants/src/plan.rs).
ALTER TABLE tenants
    ADD COLUMN plan text NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'growth', 'enterprise'));

-- Negotiated exceptions to the plan's limits (an enterprise deal, a temporary raise), as
-- {"events_per_second": …, "burst_events": …, "connections": …, "retention_days": …, "seats": …}.
ALTER TABLE tenants
    ADD COLUMN limit_overrides jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(limit_overrides) = 'object');
