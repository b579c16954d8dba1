-- Table and user of the masked point select (benches/overhead/masked_point_select.sql,
-- benches/overhead/masked_policy.toml); run with `psql -v masked_user=NAME`.
CREATE ROLE :"masked_user" LOGIN;
CREATE TABLE public.customers (
    id integer PRIMARY KEY,
    name text NOT NULL,
    phone text,
    id_card text
);
INSERT INTO public.customers
SELECT i,
       'Customer ' || i,
       '138' || lpad((i * 7919 % 100000000)::text, 8, '0'),
       '110105' || (1950 + i % 60)::text || lpad((i % 12 + 1)::text, 2, '0')
           || lpad((i % 28 + 1)::text, 2, '0') || lpad(i::text, 4, '0')
FROM generate_series(1, 1000) AS i;
GRANT SELECT ON public.customers TO :"masked_user";
ANALYZE public.customers;
