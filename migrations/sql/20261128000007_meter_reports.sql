-- Usage reported to Stripe's meters, per ledger row: what was sent so far. Late usage raises
-- a row's quantity above it, and the difference is sent as an event of its own (named by the
-- quantity sent before it, so a retry of the same send is the same event to Stripe).
ALTER TABLE usage_ledger
    ADD COLUMN sent_quantity bigint NOT NULL DEFAULT 0 CHECK (sent_quantity >= 0),
    ADD COLUMN sent_at timestamptz,
    -- The event being sent: written before it goes to Stripe and resent exactly as it was
    -- until Stripe acknowledges it, so late usage never changes an event already on its way.
    ADD COLUMN pending_identifier text,
    ADD COLUMN pending_value bigint CHECK (pending_value > 0),
    ADD CHECK ((pending_identifier IS NULL) = (pending_value IS NULL));
CREATE INDEX usage_ledger_unsent ON usage_ledger (tenant_id, hour)
    WHERE quantity > sent_quantity OR pending_identifier IS NOT NULL;

-- The stores with hours that ended by `before` not yet wholly reported (ids only).
CREATE FUNCTION nudge_meter_due(before timestamptz) RETURNS SETOF uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'nudge_meter_due: its owner % does not bypass row-level security', current_user;
    END IF;
    RETURN QUERY
        SELECT DISTINCT l.tenant_id FROM usage_ledger l
        JOIN billing_accounts b ON b.tenant_id = l.tenant_id
        WHERE b.stripe_customer_id IS NOT NULL AND l.meter <> 'peak_connections'
          AND (l.quantity > l.sent_quantity OR l.pending_identifier IS NOT NULL)
          AND l.hour + interval '1 hour' <= before
          AND l.hour > now() - interval '34 days'
        LIMIT 500;
END
$$;
REVOKE ALL ON FUNCTION nudge_meter_due(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nudge_meter_due(timestamptz) TO nudge_app;
