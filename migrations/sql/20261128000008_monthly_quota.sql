-- Where each store stands against its plan's monthly events (`tenants/src/plan.rs`), as last
-- counted from the usage ledger: `ok`, `soft_limit` (the merchant is warned), `hard_limit`
-- (its cell refuses its events until the month ends or the plan grows).
ALTER TABLE tenants
    ADD COLUMN quota_state text NOT NULL DEFAULT 'ok' CHECK (quota_state IN ('ok', 'soft_limit', 'hard_limit'));
