-- The one way a transaction starts acting for a tenant, whatever client library issues it
-- (sqlx directly, or sea-orm over the same pool): set the transaction-local tenant context,
-- hold the tenant's advisory lock shared (a move takes it exclusively), and say whether the
-- tenant has been fenced out of this database (moved elsewhere).
CREATE FUNCTION nudge_enter_tenant(tenant uuid, lock_key bigint) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM set_config('nudge.tenant_id', tenant::text, true);
    PERFORM pg_advisory_xact_lock_shared(lock_key);
    RETURN EXISTS (SELECT 1 FROM tenant_fences WHERE tenant_id = tenant);
END
$$;
GRANT EXECUTE ON FUNCTION nudge_enter_tenant(uuid, bigint) TO nudge_app;
