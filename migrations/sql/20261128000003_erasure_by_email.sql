-- Erasure by e-mail: a request of scope `email` names an address by its email digest
-- (`nudge_contracts::email_digest`, kept in `subject_digest`); the store's cell finds every
-- shopper the store identified with it and reports them by subject digest, kept on its step
-- (`subjects`), with those a legal hold kept it from erasing (`held_subjects`). The store's
-- record lists the erased addresses (from these requests), apart from its suppressed
-- shoppers.
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_scope_check;
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_scope_check
    CHECK (scope IN ('shopper', 'email', 'tenant'));
ALTER TABLE erasure_requests DROP CONSTRAINT erasure_requests_subject_of_scope;
ALTER TABLE erasure_requests ADD CONSTRAINT erasure_requests_subject_of_scope
    CHECK ((scope IN ('shopper', 'email')) = (subject_digest IS NOT NULL));

ALTER TABLE erasure_steps ADD COLUMN subjects text[] NOT NULL DEFAULT '{}';
ALTER TABLE erasure_steps ADD COLUMN held_subjects text[] NOT NULL DEFAULT '{}';
-- Every element a subject digest (and none NULL, which array_to_string would skip).
ALTER TABLE erasure_steps ADD CONSTRAINT erasure_steps_subjects_form
    CHECK (array_position(subjects, NULL) IS NULL
       AND array_to_string(subjects, ',') ~ '^([0-9a-f]{64}(,[0-9a-f]{64})*)?$'
       AND array_position(held_subjects, NULL) IS NULL
       AND array_to_string(held_subjects, ',') ~ '^([0-9a-f]{64}(,[0-9a-f]{64})*)?$');
