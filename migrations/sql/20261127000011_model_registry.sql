-- The model registry. Platform-owned and global (no tenant column, no row-level security);
-- used in the main database only, though every database carries the same schema.

-- Artifacts by content: the SHA-256 of the bytes is the key, so an artifact is stored once
-- however many versions name it, and what is stored cannot drift from its address.
CREATE TABLE model_artifacts (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes       bytea NOT NULL,
    size_bytes  integer NOT NULL CHECK (size_bytes = octet_length(bytes)),
    created_at  timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT ON model_artifacts TO nudge_app;

-- Model versions: `name@number`, numbered per name by the registry.
CREATE TABLE models (
    version         text PRIMARY KEY CHECK (version = name || '@' || number),
    name            text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    number          integer NOT NULL CHECK (number >= 1),
    sha256          text NOT NULL REFERENCES model_artifacts (sha256),
    -- The input schema, as the artifact declares it and the registry checked it.
    feature_set     text NOT NULL,
    feature_names   text[] NOT NULL,
    input_type      text NOT NULL,
    metrics         jsonb NOT NULL CHECK (jsonb_typeof(metrics) = 'object'),
    -- training_data_sha256, code_sha256, code_commit, parameters, seed.
    lineage         jsonb NOT NULL CHECK (jsonb_typeof(lineage) = 'object'),
    stage           text NOT NULL CHECK (stage IN ('candidate', 'canary', 'production', 'archived')),
    -- Increases with every change announced to the cells.
    revision        bigint NOT NULL DEFAULT 1,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    stage_changed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, number),
    -- One version per name and artifact: uploading the same bytes again is not a new version.
    UNIQUE (name, sha256)
);
GRANT SELECT, INSERT, UPDATE ON models TO nudge_app;

-- Every stage change, with who made it and why.
CREATE TABLE model_stage_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version     text NOT NULL REFERENCES models (version),
    from_stage  text,
    to_stage    text NOT NULL,
    actor       text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    at          timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT ON model_stage_events TO nudge_app;

-- The model a store without an assignment is scored with: one row.
CREATE TABLE model_default (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version     text NOT NULL REFERENCES models (version),
    revision    bigint NOT NULL DEFAULT 1,
    changed_by  text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON model_default TO nudge_app;

-- How many stores (not deleted) in this database are scored with a version or roll it
-- out, so the registry refuses to archive a model in use. Reads across tenants, so it runs
-- with its owner's rights and answers only a count. `tenants` forces row-level security,
-- which binds its owner too unless the owner bypasses it: an owner that cannot see every
-- row would count zero and let a model in use be archived, so the function refuses to
-- answer then.
CREATE FUNCTION nudge_model_users(v text) RETURNS bigint
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'nudge_model_users: its owner % does not bypass row-level security', current_user;
    END IF;
    RETURN (SELECT count(*) FROM tenants
            WHERE state <> 'deleted' AND (model_version = v OR model_rollout ->> 'candidate' = v));
END
$$;
REVOKE ALL ON FUNCTION nudge_model_users(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION nudge_model_users(text) TO nudge_app;
