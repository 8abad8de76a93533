-- Offboarding: a store that leaves keeps a grace period (it can change its mind, and
-- export), then everything of it is erased by an erasure request of scope `tenant`, which
-- leaves only the store's row (state `deleted`), its audit trails and its receipts.

ALTER TABLE tenants ADD COLUMN offboarding_requested_at timestamptz;
ALTER TABLE tenants ADD COLUMN offboarding_requested_by text CHECK (length(offboarding_requested_by) BETWEEN 1 AND 200);
-- When the grace period ends and the purge may start.
ALTER TABLE tenants ADD COLUMN purge_after timestamptz;
-- The state the store left, which cancelling the offboarding returns it to (a suspended
-- store stays suspended).
ALTER TABLE tenants ADD COLUMN offboarding_from text CHECK (offboarding_from IN ('active', 'suspended'));
ALTER TABLE tenants ADD CONSTRAINT tenants_offboarding_complete
    CHECK ((offboarding_requested_at IS NULL) = (purge_after IS NULL)
       AND (offboarding_requested_at IS NULL) = (offboarding_requested_by IS NULL)
       AND (offboarding_requested_at IS NULL) = (offboarding_from IS NULL));

-- A request names one shopper (by subject digest) or the whole store, once.
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_scope_check;
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_scope_check CHECK (scope IN ('shopper', 'tenant'));
ALTER TABLE erasure_requests ALTER COLUMN subject_digest DROP NOT NULL;
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_subject_of_scope
    CHECK ((scope = 'shopper') = (subject_digest IS NOT NULL));
CREATE UNIQUE INDEX erasure_requests_one_per_tenant ON erasure_requests (tenant_id) WHERE scope = 'tenant';

-- The stores whose grace period has ended by `at` (in this database), for the control
-- plane's offboarding sweep, which then acts for each under its own tenant context. Ids
-- only: the function reads across tenants and says nothing else. Like nudge_model_users,
-- it refuses to answer when its owner cannot see every row (it would find no store due).
CREATE FUNCTION nudge_offboardings_due(at timestamptz) RETURNS SETOF uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'nudge_offboardings_due: its owner % does not bypass row-level security', current_user;
    END IF;
    RETURN QUERY SELECT tenant_id FROM tenants WHERE state = 'offboarding' AND purge_after <= at ORDER BY purge_after;
END
$$;
REVOKE ALL ON FUNCTION nudge_offboardings_due(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nudge_offboardings_due(timestamptz) TO nudge_app;
