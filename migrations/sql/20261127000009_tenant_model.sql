-- The model a store's events are scored with, as a version the cells ship
-- (`name@version`); NULL: the cell's default model.
ALTER TABLE tenants
    ADD COLUMN model_version text CHECK (model_version ~ '^[a-z0-9_]+@[0-9]+$');
