-- Each store's Stripe customer and subscription. The billing sync (control-plane/src/billing.rs)
-- makes Stripe match the store: one customer per store, subscribed to its plan's price while
-- the store is not leaving, the subscription cancelled once it is. Stripe's ids only: no card
-- or payment data is kept here.
CREATE TABLE billing_accounts (
    tenant_id              uuid PRIMARY KEY REFERENCES tenants (tenant_id),
    stripe_customer_id     text CHECK (length(stripe_customer_id) BETWEEN 1 AND 255),
    stripe_subscription_id text CHECK (length(stripe_subscription_id) BETWEEN 1 AND 255),
    stripe_item_id         text CHECK (length(stripe_item_id) BETWEEN 1 AND 255),
    -- The plan the live subscription is on; NULL: no live subscription.
    subscribed_plan        text CHECK (subscribed_plan IN ('free', 'growth', 'enterprise')),
    -- Subscriptions created so far: names the next creation's idempotency key.
    subscriptions_created  integer NOT NULL DEFAULT 0 CHECK (subscriptions_created >= 0),
    -- The last failure talking to Stripe (Stripe's message, no personal data), and how many
    -- in a row: the sync backs off by them.
    last_error             text,
    failures               integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    synced_at              timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK ((subscribed_plan IS NULL) OR (stripe_subscription_id IS NOT NULL AND stripe_item_id IS NOT NULL))
);
ALTER TABLE billing_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing_accounts
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT, UPDATE ON billing_accounts TO nudge_app;

-- The stores whose Stripe side does not match them: no customer or no subscription to their
-- plan while they stay (a store not yet placed on a cell waits), or a live subscription
-- while they leave. One that failed lately
-- waits (2^failures seconds, at most ten minutes). Ids only, like every sweep's function.
CREATE FUNCTION nudge_billing_due() RETURNS SETOF uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'nudge_billing_due: its owner % does not bypass row-level security', current_user;
    END IF;
    RETURN QUERY
        SELECT t.tenant_id FROM tenants t LEFT JOIN billing_accounts b ON b.tenant_id = t.tenant_id
        WHERE ((t.state NOT IN ('pending', 'offboarding', 'deleted')
                AND (b.tenant_id IS NULL OR b.stripe_customer_id IS NULL OR b.subscribed_plan IS DISTINCT FROM t.plan))
            OR (t.state IN ('offboarding', 'deleted') AND b.subscribed_plan IS NOT NULL))
          AND (b.failures IS NULL OR b.failures = 0
               OR b.updated_at < now() - least(interval '10 minutes', interval '1 second' * power(2, least(b.failures, 10))))
        ORDER BY t.tenant_id
        LIMIT 500;
END
$$;
REVOKE ALL ON FUNCTION nudge_billing_due() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nudge_billing_due() TO nudge_app;
