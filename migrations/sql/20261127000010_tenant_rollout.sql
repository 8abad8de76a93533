-- A candidate model rolled out beside a store's production model:
-- {"candidate": "name@version", "mode": "canary" | "shadow", "canary_basis_points": 0..10000}.
-- NULL: no rollout.
ALTER TABLE tenants
    ADD COLUMN model_rollout jsonb CHECK (model_rollout IS NULL OR jsonb_typeof(model_rollout) = 'object');
