-- Constraints whose outcome for a written row can depend on values the statement did
-- not write: unique and exclusion indexes (with every column their keys, expressions
-- and predicates read), CHECK constraints, and foreign keys, listed on the referencing
-- ('f') and on the referenced ('r') relation. A partition's or inheritance child's own
-- constraints are listed on its ancestors too: writes through the parent reach them.
WITH RECURSIVE up(rel, anc) AS (
    SELECT c.oid, c.oid FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'p', 'f')
  UNION
    SELECT up.rel, i.inhparent
    FROM up JOIN pg_catalog.pg_inherits i ON i.inhrelid = up.anc
),
cons(rel, name, kind, cols, orel, ocols) AS (
    SELECT x.indrelid, i.relname,
           CASE WHEN k.oid IS NULL THEN 'u' ELSE 'x' END,
           ARRAY(SELECT DISTINCT s.a FROM (
                   SELECT unnest(x.indkey::int2[]) AS a
                   UNION
                   SELECT d.refobjsubid::int2 FROM pg_catalog.pg_depend d
                   WHERE d.classid = 'pg_catalog.pg_class'::regclass
                     AND d.objid = x.indexrelid
                     AND d.refclassid = 'pg_catalog.pg_class'::regclass
                     AND d.refobjid = x.indrelid) s
                 WHERE s.a > 0 ORDER BY s.a),
           0::oid, '{}'::int2[]
    FROM pg_catalog.pg_index x
    JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
    LEFT JOIN pg_catalog.pg_constraint k ON k.conindid = x.indexrelid AND k.contype = 'x'
    WHERE x.indisunique OR k.oid IS NOT NULL
  UNION ALL
    SELECT k.conrelid, k.conname, 'c', k.conkey, 0::oid, '{}'::int2[]
    FROM pg_catalog.pg_constraint k WHERE k.contype = 'c' AND k.conrelid <> 0
  UNION ALL
    SELECT k.conrelid, k.conname, 'f', k.conkey, k.confrelid, k.confkey
    FROM pg_catalog.pg_constraint k WHERE k.contype = 'f'
  UNION ALL
    SELECT k.confrelid, k.conname, 'r', k.confkey, k.conrelid, k.conkey
    FROM pg_catalog.pg_constraint k WHERE k.contype = 'f'
)
SELECT n.nspname::text, c.relname::text, k.name::text, k.kind::text,
       ARRAY(SELECT a.attname::text
             FROM unnest(k.cols) WITH ORDINALITY u(num, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = k.rel AND a.attnum = u.num
             ORDER BY u.ord),
       otn.nspname::text, ot.relname::text,
       ARRAY(SELECT a.attname::text
             FROM unnest(k.ocols) WITH ORDINALITY u(num, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = k.orel AND a.attnum = u.num
             ORDER BY u.ord)
FROM cons k
JOIN up ON up.rel = k.rel
JOIN pg_catalog.pg_class c ON c.oid = up.anc
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_class ot ON ot.oid = k.orel
LEFT JOIN pg_catalog.pg_namespace otn ON otn.oid = ot.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
