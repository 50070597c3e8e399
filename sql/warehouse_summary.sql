-- What the demo prints of the warehouse: rows per table, then a sample query over the star
-- schema (sales by month and currency).
SELECT relname AS "table", n_live_tup AS "rows"
FROM pg_stat_user_tables
WHERE relname LIKE 'dim\_%' OR relname LIKE 'fact\_%'
ORDER BY relname;

SELECT d.year, d.month_name AS month, c.currency_code AS currency,
       count(*) AS order_versions, sum(f.units_sold) AS units,
       sum(f.units_sold * f.unit_price)::numeric(14,2) AS value
FROM fact_sales_order f
JOIN dim_date d ON d.date_id = f.created_date
JOIN dim_currency c USING (currency_id)
-- the latest version of each order only
WHERE NOT EXISTS (
  SELECT 1 FROM fact_sales_order later
  WHERE later.sales_order_id = f.sales_order_id
    AND (later.last_updated_date, later.last_updated_time) > (f.last_updated_date, f.last_updated_time))
GROUP BY d.year, d.month, d.month_name, c.currency_code
ORDER BY d.year DESC, d.month DESC, c.currency_code
LIMIT 9;
