-- Self-service plan changes. An owner who wants a paid plan is sent to Stripe Checkout in
-- setup mode: Stripe's hosted page collects a payment method for the store's customer, and
-- the completed session (a webhook) puts the store on the plan recorded here when the link
-- was made, never on one the event names. The store's existing subscription then moves to
-- the plan's price through the billing sync. A session applies once (`completed_at`).
CREATE TABLE billing_checkouts (
    tenant_id    uuid NOT NULL REFERENCES tenants (tenant_id),
    session_id   text NOT NULL CHECK (length(session_id) BETWEEN 1 AND 255),
    plan         text NOT NULL CHECK (plan IN ('free', 'growth', 'enterprise')),
    -- The member who asked for it (an account id).
    requested_by text NOT NULL CHECK (length(requested_by) BETWEEN 1 AND 255),
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (tenant_id, session_id)
);
ALTER TABLE billing_checkouts ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_checkouts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing_checkouts
    USING (tenant_id = nudge_current_tenant())
    WITH CHECK (tenant_id = nudge_current_tenant());
GRANT SELECT, INSERT, UPDATE ON billing_checkouts TO nudge_app;

-- The payment method Stripe charges the store's invoices to, set from a completed Checkout
-- (Stripe's id only: no card data is kept). A store with one can move between self-service
-- paid plans without another Checkout.
ALTER TABLE billing_accounts
    ADD COLUMN stripe_payment_method_id text CHECK (length(stripe_payment_method_id) BETWEEN 1 AND 255);
