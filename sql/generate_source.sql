-- Fills an empty ToteSys source database (tests/fixtures/oltp_schema.sql) with realistic,
-- deterministic data shaped like the real one (shared/totesys/README.md): at scale 1, 30
-- addresses, 20 counterparties, 3 currencies, 8 departments, 20 staff, 4 payment types, ~470
-- designs, ~11,200 sales orders, ~4,650 purchase orders, one transaction per order and one
-- payment per transaction (~48,000 rows). Orders, transactions, payments and designs grow with
-- the scale; the small dimensions do not.
--
-- Usage: psql -v scale=1 -f sql/generate_source.sql
\set ON_ERROR_STOP on
\if :{?scale}
\else
  \set scale 1
\endif

BEGIN;
SELECT setseed(0.42) \g /dev/null

-- Stamps spread over the real data's two years, at millisecond precision, in UTC wall time.
CREATE TEMP TABLE span AS
SELECT timestamp '2022-11-03 14:20:49.962' AS first, timestamp '2024-11-14 16:00:00' AS last;

CREATE FUNCTION pg_temp.stamp(i bigint, n bigint) RETURNS timestamp(3) LANGUAGE sql AS $$
  SELECT (first + (last - first) * (i::float8 / greatest(n, 1)))::timestamp(3) FROM span
$$;

INSERT INTO address (address_id, address_line_1, address_line_2, district, city, postal_code,
                     country, phone, created_at, last_updated)
SELECT i,
       (100 + i * 37 % 9000) || ' ' || (ARRAY['Herzog Via','Alexie Cliffs','Sincere Fort','Kuhic Ports','Ernser Spur'])[1 + i % 5],
       CASE WHEN i % 3 = 0 THEN (ARRAY['Rempel Road','Tremaine Circles','Zieme Wall'])[1 + i % 3] END,
       CASE WHEN i % 2 = 0 THEN (ARRAY['Avon','Buckinghamshire','Cambridgeshire'])[1 + i % 3] END,
       (ARRAY['New Patienceburgh','Aliso Viejo','Lake Charles','Olsonside','Fort Shadburgh','Kendraburgh'])[1 + i % 6],
       lpad((i * 7919 % 99999)::text, 5, '0'),
       (ARRAY['Turkey','San Marino','Côte d''Ivoire','Austria','Guernsey','Republic of Korea'])[1 + i % 6],
       lpad((i * 104729 % 10000)::text, 4, '0') || ' ' || lpad((i * 15485863 % 1000000)::text, 6, '0'),
       s.first, s.first
FROM generate_series(1, 30) i, span s;

INSERT INTO counterparty (counterparty_id, counterparty_legal_name, legal_address_id,
                          commercial_contact, delivery_contact, created_at, last_updated)
SELECT i,
       (ARRAY['Fahey and Sons','Leannon, Predovic and Morar','Armstrong Inc','Kohler Inc','Frami, Yundt and Macejkovic'])[1 + i % 5] || ' ' || i,
       1 + (i * 7) % 30,
       CASE WHEN i % 4 <> 0 THEN (ARRAY['Micheal Toy','Melba Sanford','Jean Hane III'])[1 + i % 3] END,
       CASE WHEN i % 5 <> 0 THEN (ARRAY['Mrs. Lucy Runolfsdottir','Myra Kovacek','Eva Upton'])[1 + i % 3] END,
       s.first, s.first
FROM generate_series(1, 20) i, span s;

INSERT INTO currency (currency_id, currency_code, created_at, last_updated)
SELECT i, (ARRAY['GBP','USD','EUR'])[i], s.first, s.first FROM generate_series(1, 3) i, span s;

INSERT INTO department (department_id, department_name, location, manager, created_at, last_updated)
SELECT i, (ARRAY['Sales','Purchasing','Production','Dispatch','Finance','Facilities','Communications','HR'])[i],
       (ARRAY['Manchester','Manchester','Leeds','Leds','Manchester','Manchester','Leeds', NULL])[i],
       (ARRAY['Richard Roma','Naomi Lapaglia','Chester Ming','Mark Hanna','Jordan Belfort','Shelley Levene','Ann Blake','James Link'])[i],
       s.first, s.first
FROM generate_series(1, 8) i, span s;

INSERT INTO staff (staff_id, first_name, last_name, department_id, email_address, created_at, last_updated)
SELECT i, f, l, 1 + i % 8,
       lower(translate(f, 'ëé''', 'ee')) || '.' || lower(translate(l, 'ëé''', 'ee')) || '@terrifictotes.com',
       s.first, s.first
FROM generate_series(1, 20) i, span s,
     LATERAL (SELECT (ARRAY['Jeremie','Deron','Jeanette','Ana','Magdalena','Korey','Raphael','Oswaldo','Brody','Jazmyn','Meda','Imani','Stan','Rigoberto','Tom','Pierre','Zoë','Irving','Tomasa','Pam'])[i] AS f,
                         (ARRAY['Franey','Beier','Erdman','Glover','Zieme','Kreiger','Rippin','Bergstrom','Ratke','Kuhn','Cremin','Walsh','Lehner','VonRueden','Gutkowski','Marquardt','O''Keefe','Lang','Moore','Schroeder'])[i] AS l) n;

INSERT INTO payment_type (payment_type_id, payment_type_name, created_at, last_updated)
SELECT i, (ARRAY['SALES_RECEIPT','SALES_REFUND','PURCHASE_PAYMENT','PURCHASE_REFUND'])[i]::"PaymentTypeName",
       s.first, s.first
FROM generate_series(1, 4) i, span s;

INSERT INTO design (design_id, created_at, design_name, file_location, file_name, last_updated)
SELECT i, t, n, (ARRAY['/usr','/private','/Users','/System','/opt','/home/user/dir'])[1 + i % 6],
       lower(n) || '-' || to_char(t, 'YYYYMMDD') || '-' || substr(md5(i::text), 1, 4) || '.json', t
FROM generate_series(1, 470 * :scale) i,
     LATERAL (SELECT pg_temp.stamp(i, 470 * :scale) AS t,
                     (ARRAY['Wooden','Bronze','Steel','Granite','Soft','Frozen','Fresh','Plastic','Concrete','Cotton'])[1 + i % 10] AS n) d;

INSERT INTO sales_order (sales_order_id, created_at, last_updated, design_id, staff_id,
                         counterparty_id, units_sold, unit_price, currency_id,
                         agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id)
SELECT i, t, t, 1 + floor(random() * 470 * :scale)::int, 1 + floor(random() * 20)::int,
       1 + floor(random() * 20)::int, 1000 + floor(random() * 99000)::int,
       round((2 + random() * 2)::numeric, 2), 1 + floor(random() * 3)::int,
       to_char(t + (2 + floor(random() * 5)) * interval '1 day', 'YYYY-MM-DD'),
       to_char(t + (1 + floor(random() * 6)) * interval '1 day', 'YYYY-MM-DD'),
       1 + floor(random() * 30)::int
FROM generate_series(1, 11200 * :scale) i, LATERAL (SELECT pg_temp.stamp(i, 11200 * :scale) AS t) s;

INSERT INTO purchase_order (purchase_order_id, created_at, last_updated, staff_id, counterparty_id,
                            item_code, item_quantity, item_unit_price, currency_id,
                            agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id)
SELECT i, t, t, 1 + floor(random() * 20)::int, 1 + floor(random() * 20)::int,
       upper(substr(md5(i::text), 1, 7)), 1 + floor(random() * 999)::int,
       round((1 + random() * 999)::numeric, 2), 1 + floor(random() * 3)::int,
       to_char(t + (1 + floor(random() * 6)) * interval '1 day', 'YYYY-MM-DD'),
       to_char(t + (1 + floor(random() * 6)) * interval '1 day', 'YYYY-MM-DD'),
       1 + floor(random() * 30)::int
FROM generate_series(1, 4650 * :scale) i, LATERAL (SELECT pg_temp.stamp(i, 4650 * :scale) AS t) s;

-- One transaction per order, numbered in time order.
INSERT INTO "transaction" (transaction_id, transaction_type, sales_order_id, purchase_order_id,
                           created_at, last_updated)
SELECT row_number() OVER (ORDER BY created_at, kind, id), kind::"TransactionType",
       CASE WHEN kind = 'SALE' THEN id END, CASE WHEN kind = 'PURCHASE' THEN id END,
       created_at, created_at
FROM (SELECT 'SALE' AS kind, sales_order_id AS id, created_at FROM sales_order
      UNION ALL
      SELECT 'PURCHASE', purchase_order_id, created_at FROM purchase_order) o;

-- One payment per transaction; about half are paid later, in daily batches that share one
-- last_updated (as the real payments are).
INSERT INTO payment (payment_id, created_at, last_updated, transaction_id, counterparty_id,
                     payment_amount, currency_id, payment_type_id, paid, payment_date,
                     company_ac_number, counterparty_ac_number)
SELECT t.transaction_id, t.created_at,
       CASE WHEN t.paid THEN least(date_trunc('day', t.created_at) + interval '1 day 9 hours', s.last)::timestamp(3)
            ELSE t.created_at END,
       t.transaction_id, 1 + floor(random() * 20)::int,
       round((1 + random() * 999999)::numeric, 2), 1 + floor(random() * 3)::int,
       CASE WHEN t.transaction_type = 'SALE' THEN 1 + floor(random() * 2)::int ELSE 3 + floor(random() * 2)::int END,
       t.paid, to_char(t.created_at + (1 + floor(random() * 6)) * interval '1 day', 'YYYY-MM-DD'),
       10000000 + floor(random() * 89999999)::int, 10000000 + floor(random() * 89999999)::int
FROM (SELECT *, random() < 0.5 AS paid FROM "transaction") t, span s;

-- Serials continue after the generated ids, so the application (and the demo) can insert.
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM (VALUES
      ('address', 'address_id'), ('counterparty', 'counterparty_id'), ('currency', 'currency_id'),
      ('department', 'department_id'), ('design', 'design_id'), ('staff', 'staff_id'),
      ('payment_type', 'payment_type_id'), ('sales_order', 'sales_order_id'),
      ('purchase_order', 'purchase_order_id'), ('transaction', 'transaction_id'),
      ('payment', 'payment_id')) AS v(t, c)
  LOOP
    EXECUTE format('SELECT setval(pg_get_serial_sequence(%L, %L), coalesce(max(%I), 0) + 1, false) FROM %I',
                   quote_ident(r.t), r.c, r.c, r.t);
  END LOOP;
END $$;
COMMIT;
ANALYZE;
