//! The hold: how far a fact table may be read while the dimension tables are not read in
//! the same invocation.

use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use tracing::info;
use utils::store::S3Store;
use utils::tables::TableSpec;
use utils::time::format_time;
use utils::watermark::read_state;

use crate::error::{Error, Result};

/// How far a fact table may be read in an invocation that does not read the dimension tables
/// itself: to the earliest watermark among them (rows past it could reference dimension rows
/// not ingested yet, which the load would refuse). A dimension table that stopped short of its
/// own window end (mid-backfill) and whose watermark is still behind this run's end makes the
/// fact table report itself incomplete, so the state machine runs another round; one whose
/// watermark reached the run's end holds nothing back, whatever its last run said (so a table
/// that is not read again cannot hold the facts back for ever). A dimension table never
/// ingested holds nothing back (a fact table may be ingested alone); one read in the same
/// invocation needs no hold (one snapshot, one window end).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hold {
    pub until: Option<DateTime<Utc>>,
    /// The dimension tables mid-backfill, each with its watermark.
    pub backfilling: Vec<(&'static str, DateTime<Utc>)>,
}

impl Hold {
    /// The hold on the fact tables of an invocation reading `tables`, from the state objects
    /// of the `deployed` dimension tables it does not read (a table taken out of the
    /// deployment holds nothing back).
    pub async fn for_invocation(
        store: &S3Store,
        tables: &[&'static TableSpec],
        deployed: &[&'static TableSpec],
    ) -> Result<Hold> {
        let reads_facts = tables.iter().any(|t| t.is_fact());
        let others: Vec<&'static str> = deployed
            .iter()
            .filter(|t| !t.is_fact())
            .map(|t| t.name)
            .filter(|name| !tables.iter().any(|t| t.name == *name))
            .collect();
        if !reads_facts || others.is_empty() {
            return Ok(Hold::default());
        }
        let states = try_join_all(others.iter().map(|name| async move {
            read_state(store, name)
                .await
                .map_err(|e| Error::from(e).in_table(name))
        }))
        .await?;
        let mut hold = Hold::default();
        for (name, state) in others.into_iter().zip(states) {
            let Some(state) = state else { continue };
            hold.until = Some(
                hold.until
                    .map_or(state.window_end, |u| u.min(state.window_end)),
            );
            if !state.caught_up {
                hold.backfilling.push((name, state.window_end));
            }
        }
        Ok(hold)
    }

    /// `table`'s window end under this hold (a dimension table is not held), and whether it
    /// waits for a dimension table that is mid-backfill and behind `end`.
    pub(crate) fn apply(&self, table: &TableSpec, end: DateTime<Utc>) -> (DateTime<Utc>, bool) {
        if !table.is_fact() {
            return (end, false);
        }
        let waiting_for: Vec<&str> = self
            .backfilling
            .iter()
            .filter(|(_, watermark)| *watermark < end)
            .map(|(name, _)| *name)
            .collect();
        let waiting = !waiting_for.is_empty();
        match self.until.filter(|until| *until < end) {
            Some(until) => {
                info!(
                    table = table.name,
                    until = format_time(until),
                    waiting_for = waiting_for.join(", "),
                    "read only up to the dimension tables' watermark"
                );
                (until, waiting)
            }
            None => (end, waiting),
        }
    }
}
