-- Lets a non-superuser role read SCRAM verifiers for pgveil's `auth_query`, the way
-- pgbouncer's `auth_query` setups do. Run as a superuser in `lookup_database`, then set
--   lookup_user = "pgveil_auth"
--   auth_query  = "SELECT pgveil.get_auth($1)"
-- Rename the role `pgveil_auth` to yours before running.
CREATE SCHEMA IF NOT EXISTS pgveil;
REVOKE ALL ON SCHEMA pgveil FROM PUBLIC;
GRANT USAGE ON SCHEMA pgveil TO pgveil_auth;

CREATE OR REPLACE FUNCTION pgveil.get_auth(p_user name)
RETURNS text
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rolpassword
    FROM pg_catalog.pg_authid
    WHERE rolname = p_user
      AND rolcanlogin
      AND (rolvaliduntil IS NULL OR rolvaliduntil > now())
$$;

REVOKE ALL ON FUNCTION pgveil.get_auth(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgveil.get_auth(name) TO pgveil_auth;
