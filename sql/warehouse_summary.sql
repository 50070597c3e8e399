-- What the demo prints of the warehouse: rows per table, then one of the brief's answers,
-- sales by month and currency (sql/warehouse_views.sql), the latest months first.
SELECT relname AS "table", n_live_tup AS "rows"
FROM pg_stat_user_tables
WHERE relname LIKE 'dim\_%' OR relname LIKE 'fact\_%'
ORDER BY relname;

SELECT year, month_name AS month, currency_code AS currency, sales_orders, units_sold, revenue
FROM sales_by_month_currency
ORDER BY year DESC, month DESC, currency_code
LIMIT 9;
