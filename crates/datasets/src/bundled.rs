//! The declarations built into the crate: the repository's `datasets/*.json` when it was
//! compiled, the same files Terraform reads.

use crate::decl::Dataset;
use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// Every bundled declaration, checked, none of whose names is in `reserved` (the names the
/// database pipeline's tables use) and none of whose landing prefixes holds another's.
pub fn bundled(reserved: &[&str]) -> Result<Vec<Dataset>> {
    let all = BUNDLED
        .iter()
        .map(|(path, text)| Dataset::parse(text, path))
        .collect::<Result<Vec<_>>>()?;
    check_together(&all, reserved)?;
    Ok(all)
}

/// What no single declaration can say: the names and prefixes of all of them agree.
pub fn check_together(all: &[Dataset], reserved: &[&str]) -> Result<()> {
    let invalid = |d: &Dataset, reason: String| Error::Declaration {
        path: format!("datasets/{}.json", d.name),
        reason,
    };
    for (i, d) in all.iter().enumerate() {
        let names = [Some(d.name.as_str()), d.warehouse_table()];
        if let Some(n) = names.into_iter().flatten().find(|n| reserved.contains(n)) {
            return Err(invalid(
                d,
                format!("{n:?} is a table of the database pipeline"),
            ));
        }
        for other in &all[..i] {
            if other.name == d.name {
                return Err(invalid(
                    d,
                    format!("dataset {:?} is declared twice", d.name),
                ));
            }
            if let (Some(a), Some(b)) = (d.landing_prefix(), other.landing_prefix())
                && (a.starts_with(b) || b.starts_with(a))
            {
                return Err(invalid(
                    d,
                    format!(
                        "source.prefix {a:?} overlaps dataset {:?}'s {b:?}: a file would \
                         belong to both",
                        other.name
                    ),
                ));
            }
            if d.warehouse_table().is_some() && d.warehouse_table() == other.warehouse_table() {
                return Err(invalid(
                    d,
                    format!("warehouse table shared with dataset {:?}", other.name),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_declarations_are_bundled_and_agree() {
        let all = bundled(&["sales_order"]).unwrap();
        assert!(all.iter().any(|d| d.name == "trips"));
        let err = bundled(&["trips"]).unwrap_err().to_string();
        assert!(err.contains("datasets/trips.json"), "{err}");
        assert!(err.contains("database pipeline"), "{err}");
    }

    #[test]
    fn overlapping_prefixes_are_refused() {
        let trips = crate::decl::tests::trips();
        let mut other = trips.clone();
        other.name = "trips_2".into();
        other.warehouse = None;
        other.source.prefix = "landing/trips/2024/".into();
        let err = check_together(&[trips, other], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("overlaps"), "{err}");
    }
}
