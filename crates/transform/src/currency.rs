//! ISO 4217 currency names, from the `rust_iso4217` crate's copy of the ISO tables (current,
//! fund and historic codes).

/// The name dim_currency shows for a code with no ISO 4217 entry.
pub const UNKNOWN: &str = "Unknown";

/// The ISO 4217 name of `code` ("GBP" → "Pound Sterling"), or `None` if ISO 4217 has no such
/// code. Codes are matched exactly: ISO codes are upper case, so "gbp" is not one.
pub fn currency_name(code: &str) -> Option<&'static str> {
    rust_iso4217::ALL_MAP.get(code).map(|c| c.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_iso_4217_names() {
        for (code, name) in [
            ("GBP", "Pound Sterling"),
            ("USD", "US Dollar"),
            ("EUR", "Euro"),
            ("CHF", "Swiss Franc"),
            ("JPY", "Yen"),
            ("XCG", "Caribbean Guilder"),
        ] {
            assert_eq!(currency_name(code), Some(name), "{code}");
        }
    }

    #[test]
    fn codes_outside_iso_4217_have_no_name() {
        for code in ["XXY", "gbp", "GB", "", "GBPX"] {
            assert_eq!(currency_name(code), None, "{code}");
        }
    }
}
