//! Month partitions of `concept_attempts`: created ahead so rows never
//! land in DEFAULT by accident, listed with row counts, and detached once
//! older than a cut-off (the detached tables stay, for archiving or drop).

use chrono::{Datelike, Months, NaiveDate};
use diesel_async::RunQueryDsl;

use crate::{Store, StoreError};

/// First day of the month of `d`.
pub fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

/// `from`'s month and the `ahead` months after it.
pub fn months_from(from: NaiveDate, ahead: u32) -> Vec<NaiveDate> {
    let first = month_start(from);
    (0..=ahead)
        .filter_map(|i| first.checked_add_months(Months::new(i)))
        .collect()
}

/// The month a partition name `concept_attempts_YYYY_MM` covers.
pub fn partition_month(name: &str) -> Option<NaiveDate> {
    let rest = name.strip_prefix("concept_attempts_")?;
    let (y, m) = rest.split_once('_')?;
    NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1)
}

impl Store {
    /// Makes sure a month partition exists for each month; returns the months
    /// whose rows will go to DEFAULT because it already holds rows of them.
    pub async fn ensure_month_partitions(
        &self,
        months: &[NaiveDate],
    ) -> Result<Vec<NaiveDate>, StoreError> {
        let mut c = self.conn().await?;
        let mut to_default = Vec::new();
        for m in months {
            let r: Vec<EnsureResult> =
                diesel::sql_query("SELECT novyra_ensure_attempt_partition($1) AS part")
                    .bind::<diesel::sql_types::Date, _>(*m)
                    .load(&mut c)
                    .await?;
            if <[_]>::first(&r).and_then(|r| r.part.as_ref()).is_none() {
                to_default.push(*m);
            }
        }
        Ok(to_default)
    }

    /// Creates the partitions of `from`'s month and `ahead` months after it.
    /// Returns months that could not get a partition because DEFAULT holds
    /// rows of them.
    pub async fn ensure_months_ahead(
        &self,
        from: NaiveDate,
        ahead: u32,
    ) -> Result<Vec<NaiveDate>, StoreError> {
        self.ensure_month_partitions(&months_from(from, ahead))
            .await
    }

    /// Detaches month partitions whose month ends on or before `cutoff`
    /// (needs the owner role). Returns the detached table names.
    pub async fn detach_partitions_before(
        &self,
        cutoff: NaiveDate,
    ) -> Result<Vec<String>, StoreError> {
        let mut detached = Vec::new();
        let mut pruned_to: Option<NaiveDate> = None;
        for (name, _) in self.attempt_partitions().await? {
            let Some(month) = partition_month(&name) else {
                continue;
            };
            let Some(end) = month.checked_add_months(Months::new(1)) else {
                continue;
            };
            if end <= cutoff {
                let mut c = self.conn().await?;
                diesel::sql_query(format!(
                    "ALTER TABLE concept_attempts DETACH PARTITION \"{name}\""
                ))
                .execute(&mut c)
                .await?;
                detached.push(name);
                pruned_to = pruned_to.max(Some(end));
            }
        }
        // The dedup ids of detached months go with them, so the id table
        // stays as long as the attempts it guards.
        if let Some(end) = pruned_to {
            let mut c = self.conn().await?;
            diesel::sql_query("DELETE FROM attempt_event_ids WHERE occurred_at < $1")
                .bind::<diesel::sql_types::Timestamptz, _>(
                    end.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
                )
                .execute(&mut c)
                .await?;
        }
        Ok(detached)
    }
}

#[derive(diesel::QueryableByName)]
struct EnsureResult {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    part: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_names() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 27).expect("date");
        let m = months_from(d, 3);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0], NaiveDate::from_ymd_opt(2026, 11, 1).expect("date"));
        assert_eq!(m[3], NaiveDate::from_ymd_opt(2027, 2, 1).expect("date"));
        assert_eq!(partition_month("concept_attempts_2027_02"), Some(m[3]));
        assert_eq!(partition_month("concept_attempts_default"), None);
    }
}
