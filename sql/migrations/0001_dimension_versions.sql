-- The dimensions' versions (see warehouse_schema.sql): nullable columns without a default,
-- so adding them rewrites nothing; a row with none is updated by the next file of its key.
-- Each ALTER takes its table's ACCESS EXCLUSIVE lock for a moment.
ALTER TABLE dim_staff ADD COLUMN IF NOT EXISTS last_updated timestamp(3),
                      ADD COLUMN IF NOT EXISTS department_last_updated timestamp(3);
ALTER TABLE dim_location ADD COLUMN IF NOT EXISTS last_updated timestamp(3);
ALTER TABLE dim_currency ADD COLUMN IF NOT EXISTS last_updated timestamp(3);
ALTER TABLE dim_design ADD COLUMN IF NOT EXISTS last_updated timestamp(3);
ALTER TABLE dim_counterparty ADD COLUMN IF NOT EXISTS last_updated timestamp(3),
                             ADD COLUMN IF NOT EXISTS legal_address_last_updated timestamp(3);
ALTER TABLE dim_payment_type ADD COLUMN IF NOT EXISTS last_updated timestamp(3);
ALTER TABLE dim_transaction ADD COLUMN IF NOT EXISTS last_updated timestamp(3);
