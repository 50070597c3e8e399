-- The questions of the ToteSys brief, answered in the warehouse: materialized views over the
-- star schema (sql/warehouse_schema.sql, applied first). The load refreshes every
-- materialized view that depends on a table it changed, found in PostgreSQL's catalog, so a
-- view added here (or anywhere in the database) is kept fresh too; one with a unique index on
-- plain columns is refreshed CONCURRENTLY, without blocking its readers.
--
-- Facts keep one row per version of a source row. The questions are about orders and payments
-- as they are now, so every view reads the current version of each through the current_*
-- views below (the newest last_updated per natural key; DISTINCT ON walks the facts' unique
-- version index backwards, without a sort). Money is never summed across currencies.

CREATE VIEW current_sales_order AS
SELECT DISTINCT ON (sales_order_id) *
FROM fact_sales_order
ORDER BY sales_order_id DESC, last_updated_date DESC, last_updated_time DESC;

CREATE VIEW current_purchase_order AS
SELECT DISTINCT ON (purchase_order_id) *
FROM fact_purchase_order
ORDER BY purchase_order_id DESC, last_updated_date DESC, last_updated_time DESC;

CREATE VIEW current_payment AS
SELECT DISTINCT ON (payment_id) *
FROM fact_payment
ORDER BY payment_id DESC, last_updated_date DESC, last_updated_time DESC;

-- Sales by the month the order was created, per currency.
CREATE MATERIALIZED VIEW sales_by_month_currency AS
SELECT d.year, d.month, d.month_name, c.currency_id, c.currency_code,
       count(*) AS sales_orders,
       sum(s.units_sold) AS units_sold,
       sum(s.units_sold * s.unit_price) AS revenue
FROM current_sales_order s
JOIN dim_date d ON d.date_id = s.created_date
JOIN dim_currency c USING (currency_id)
GROUP BY d.year, d.month, d.month_name, c.currency_id, c.currency_code;
CREATE UNIQUE INDEX sales_by_month_currency_key
    ON sales_by_month_currency (year, month, currency_id);

-- Revenue per design, per currency.
CREATE MATERIALIZED VIEW revenue_by_design AS
SELECT g.design_id, g.design_name, c.currency_id, c.currency_code,
       count(*) AS sales_orders,
       sum(s.units_sold) AS units_sold,
       sum(s.units_sold * s.unit_price) AS revenue
FROM current_sales_order s
JOIN dim_design g USING (design_id)
JOIN dim_currency c USING (currency_id)
GROUP BY g.design_id, g.design_name, c.currency_id, c.currency_code;
CREATE UNIQUE INDEX revenue_by_design_key ON revenue_by_design (design_id, currency_id);

-- Sales by the counterparty's legal address (country, then city), per currency.
CREATE MATERIALIZED VIEW sales_by_counterparty_location AS
SELECT p.counterparty_legal_country AS country, p.counterparty_legal_city AS city,
       c.currency_id, c.currency_code,
       count(DISTINCT s.counterparty_id) AS counterparties,
       count(*) AS sales_orders,
       sum(s.units_sold) AS units_sold,
       sum(s.units_sold * s.unit_price) AS revenue
FROM current_sales_order s
JOIN dim_counterparty p USING (counterparty_id)
JOIN dim_currency c USING (currency_id)
GROUP BY p.counterparty_legal_country, p.counterparty_legal_city, c.currency_id,
         c.currency_code;
CREATE UNIQUE INDEX sales_by_counterparty_location_key
    ON sales_by_counterparty_location (country, city, currency_id);

-- Payments per payment date, currency and type: what is still due and what is settled.
-- SALES_RECEIPT rows are money to be received, PURCHASE_PAYMENT rows money to be paid;
-- refunds the other way.
CREATE MATERIALIZED VIEW payments_by_day_currency AS
SELECT p.payment_date, c.currency_id, c.currency_code, t.payment_type_id, t.payment_type_name,
       count(*) FILTER (WHERE NOT p.paid) AS payments_due,
       coalesce(sum(p.payment_amount) FILTER (WHERE NOT p.paid), 0) AS amount_due,
       count(*) FILTER (WHERE p.paid) AS payments_settled,
       coalesce(sum(p.payment_amount) FILTER (WHERE p.paid), 0) AS amount_settled
FROM current_payment p
JOIN dim_currency c USING (currency_id)
JOIN dim_payment_type t USING (payment_type_id)
GROUP BY p.payment_date, c.currency_id, c.currency_code, t.payment_type_id,
         t.payment_type_name;
CREATE UNIQUE INDEX payments_by_day_currency_key
    ON payments_by_day_currency (payment_date, currency_id, payment_type_id);

-- Orders per member of staff: sales orders they sold, purchase orders they placed (every
-- member of staff, with zeros for those without orders).
CREATE MATERIALIZED VIEW orders_by_staff AS
SELECT st.staff_id, st.first_name, st.last_name, st.department_name, st.location,
       coalesce(so.sales_orders, 0) AS sales_orders,
       coalesce(so.units_sold, 0) AS units_sold,
       coalesce(po.purchase_orders, 0) AS purchase_orders,
       coalesce(po.items_ordered, 0) AS items_ordered
FROM dim_staff st
LEFT JOIN (
    SELECT sales_staff_id AS staff_id, count(*) AS sales_orders, sum(units_sold) AS units_sold
    FROM current_sales_order GROUP BY sales_staff_id
) so USING (staff_id)
LEFT JOIN (
    SELECT staff_id, count(*) AS purchase_orders, sum(item_quantity) AS items_ordered
    FROM current_purchase_order GROUP BY staff_id
) po USING (staff_id);
CREATE UNIQUE INDEX orders_by_staff_key ON orders_by_staff (staff_id);
