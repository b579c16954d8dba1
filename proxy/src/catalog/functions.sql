-- Functions that are not built in (outside pg_catalog / information_schema), and schemas.
SELECT 'f', n.nspname::text, p.proname::text
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 's', nspname::text, ''
FROM pg_catalog.pg_namespace
