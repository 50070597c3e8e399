//! Decoders from PostgreSQL's binary wire format straight into the values Arrow stores, for
//! the two types where a general-purpose decoder (a `Decimal`, a `NaiveDateTime`) would be
//! built only to be converted again, on every row.

use std::error::Error;

use tokio_postgres::types::{FromSql, Type};
use utils::tables::{MONEY_PRECISION, MONEY_SCALE};

type BoxError = Box<dyn Error + Sync + Send>;

/// A `numeric` with at most two decimal places and ten digits, as a count of hundredths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hundredths(pub i128);

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;

impl<'a> FromSql<'a> for Hundredths {
    /// Layout: ndigits i16, weight i16, sign u16, dscale u16, then ndigits base-10000 digits,
    /// the first worth 10000^weight.
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let word = |i: usize| -> Result<u16, BoxError> {
            raw.get(2 * i..2 * i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "truncated numeric".into())
        };
        let ndigits = word(0)? as usize;
        let weight = word(1)? as i16 as i32;
        let sign = word(2)?;
        if sign != NUMERIC_POS && sign != NUMERIC_NEG {
            return Err("NaN or infinite numeric".into());
        }
        let mut units: i128 = 0;
        for i in 0..ndigits {
            let digit = word(4 + i)?;
            if digit >= 10_000 {
                return Err("invalid numeric digit".into());
            }
            units = units
                .checked_mul(10_000)
                .and_then(|u| u.checked_add(digit.into()))
                .ok_or("numeric out of range")?;
        }
        // `units` is in units of 10000^(weight - ndigits + 1); convert to hundredths.
        let exponent = weight - ndigits as i32 + 1;
        let hundredths = if ndigits == 0 {
            0
        } else if exponent >= 0 {
            (0..exponent)
                .try_fold(units, |u, _| u.checked_mul(10_000))
                .and_then(|u| u.checked_mul(100))
                .ok_or("numeric out of range")?
        } else {
            // 10000^-k * 100 = 1 / (100 * 10000^(k-1))
            let divisor = (1..-exponent)
                .try_fold(100i128, |d, _| d.checked_mul(10_000))
                .ok_or("numeric out of range")?;
            if units % divisor != 0 {
                return Err(format!("more than {MONEY_SCALE} decimal places").into());
            }
            units / divisor
        };
        if hundredths >= 10i128.pow(MONEY_PRECISION as u32) {
            return Err(format!("does not fit numeric({MONEY_PRECISION},{MONEY_SCALE})").into());
        }
        Ok(Hundredths(if sign == NUMERIC_NEG {
            -hundredths
        } else {
            hundredths
        }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// A `timestamp` (without time zone, UTC wall time) as milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochMillis(pub i64);

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl<'a> FromSql<'a> for EpochMillis {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let micros = i64::from_be_bytes(raw.try_into().map_err(|_| "timestamp is not 8 bytes")?);
        if micros == i64::MAX || micros == i64::MIN {
            return Err("infinite timestamp".into());
        }
        if micros.rem_euclid(1000) != 0 {
            return Err("sub-millisecond timestamp".into());
        }
        let unix = micros
            .checked_add(PG_EPOCH_MICROS)
            .ok_or("timestamp out of range")?;
        Ok(EpochMillis(unix.div_euclid(1000)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMP
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rust_decimal::Decimal;
    use std::str::FromStr;
    use tokio_postgres::types::ToSql;

    /// Encodes with rust_decimal's own (independent) numeric encoder.
    fn numeric(s: &str) -> BytesMut {
        let mut buf = BytesMut::new();
        Decimal::from_str(s)
            .unwrap()
            .to_sql(&Type::NUMERIC, &mut buf)
            .unwrap();
        buf
    }

    fn hundredths(s: &str) -> Result<i128, String> {
        Hundredths::from_sql(&Type::NUMERIC, &numeric(s))
            .map(|h| h.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn numeric_decodes_to_exact_hundredths() {
        for (text, expected) in [
            ("0", 0),
            ("0.01", 1),
            ("3.94", 394),
            ("-0.5", -50),
            ("12", 1200),
            ("10000", 1_000_000),
            ("552548.62", 55_254_862),
            ("99999999.99", 9_999_999_999),
            ("-99999999.99", -9_999_999_999),
        ] {
            assert_eq!(hundredths(text), Ok(expected), "{text}");
        }
        assert_eq!(
            hundredths("100000000"),
            Err("does not fit numeric(10,2)".into())
        );
        assert_eq!(
            hundredths("1.005"),
            Err("more than 2 decimal places".into())
        );
        assert_eq!(
            hundredths("0.0001"),
            Err("more than 2 decimal places".into())
        );
    }

    #[test]
    fn numeric_rejects_nan_and_truncated_input() {
        let nan = [0, 0, 0, 0, 0xC0, 0, 0, 0];
        assert!(Hundredths::from_sql(&Type::NUMERIC, &nan).is_err());
        assert!(Hundredths::from_sql(&Type::NUMERIC, &[0, 1, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn timestamps_decode_to_epoch_milliseconds() {
        let encode = |us: i64| us.to_be_bytes();
        let t = |us: i64| EpochMillis::from_sql(&Type::TIMESTAMP, &encode(us)).map(|m| m.0);
        assert_eq!(t(0).unwrap(), 946_684_800_000);
        assert_eq!(t(-PG_EPOCH_MICROS).unwrap(), 0);
        // 2022-11-03 14:20:49.962
        assert_eq!(
            t(1_667_485_249_962_000 - PG_EPOCH_MICROS).unwrap(),
            1_667_485_249_962
        );
        assert_eq!(t(-PG_EPOCH_MICROS - 1_000).unwrap(), -1);
        assert!(t(1_500).is_err());
        assert!(t(i64::MAX).is_err());
        assert!(EpochMillis::from_sql(&Type::TIMESTAMP, &[0; 4]).is_err());
    }
}
