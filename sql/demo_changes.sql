-- What the demo changes between its two runs: a day's worth of ordinary business, stamped
-- the way the application stamps rows (UTC wall time, millisecond precision).
\set now '(clock_timestamp() AT TIME ZONE ''UTC'')::timestamp(3)'
BEGIN;
INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold,
                         unit_price, currency_id, agreed_delivery_date, agreed_payment_date,
                         agreed_delivery_location_id)
SELECT :now, :now, 1 + i % 400, 1 + i % 20, 1 + i % 20, 1000 * i, 2.50 + i / 100.0, 1 + i % 3,
       to_char(now() + interval '5 days', 'YYYY-MM-DD'), to_char(now() + interval '7 days', 'YYYY-MM-DD'),
       1 + i % 30
FROM generate_series(1, 20) i;
UPDATE payment SET paid = true, last_updated = :now
WHERE payment_id IN (SELECT payment_id FROM payment WHERE NOT paid ORDER BY payment_id LIMIT 30);
UPDATE staff SET last_name = 'Franey-Beier', email_address = 'jeremie.franey-beier@terrifictotes.com',
       last_updated = :now WHERE staff_id = 1;
UPDATE department SET department_name = department_name || ' & Returns', last_updated = :now
WHERE department_id = 2;
COMMIT;
