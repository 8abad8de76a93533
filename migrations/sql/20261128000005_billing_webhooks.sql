-- Stripe's webhooks: every event received once (`stripe_events`, the inbox: a platform table,
-- keyed by Stripe's event id, so a replay is recognised), and each store's dunning grade on
-- its billing account: `ok`, `warned` (the merchant is told), `ingest_paused` (its cell
-- refuses events), `suspended` (the store is suspended). `payment_event_at` is when Stripe
-- created the last payment event applied, so an older one arriving late changes nothing.
CREATE TABLE stripe_events (
    event_id    text PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 255),
    type        text NOT NULL CHECK (length(type) BETWEEN 1 AND 255),
    created_at  timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- What the event did: `applied`, `stale` (older than what was applied), `ignored` (a type
    -- billing does not act on), `unknown_customer`.
    outcome     text NOT NULL CHECK (outcome IN ('applied', 'stale', 'ignored', 'unknown_customer'))
);
GRANT SELECT, INSERT ON stripe_events TO nudge_app;

ALTER TABLE billing_accounts
    ADD COLUMN dunning text NOT NULL DEFAULT 'ok' CHECK (dunning IN ('ok', 'warned', 'ingest_paused', 'suspended')),
    ADD COLUMN dunning_since timestamptz,
    ADD COLUMN payment_event_at timestamptz,
    -- The store was suspended by dunning (so a payment reactivates it; another suspension
    -- is not billing's to lift).
    ADD COLUMN suspended_by_billing boolean NOT NULL DEFAULT false;
CREATE INDEX billing_accounts_customer ON billing_accounts (stripe_customer_id);

-- The store a Stripe customer is, across row-level security (ids only).
CREATE FUNCTION nudge_billing_tenant_of(customer text) RETURNS SETOF uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'nudge_billing_tenant_of: its owner % does not bypass row-level security', current_user;
    END IF;
    RETURN QUERY SELECT tenant_id FROM billing_accounts WHERE stripe_customer_id = customer;
END
$$;
REVOKE ALL ON FUNCTION nudge_billing_tenant_of(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nudge_billing_tenant_of(text) TO nudge_app;
