//! Month partitions of the append-only logs (`concept_attempts`,
//! `evaluation_logs`): created ahead so rows never land in DEFAULT by
//! accident, listed with row counts, and detached once older than a cut-off
//! (the detached tables stay, for archiving or drop).

use crate::db::in_tx;
use chrono::{Datelike, Months, NaiveDate};
use diesel_async::RunQueryDsl;

use crate::{Store, StoreError};

/// A month-partitioned log table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MonthLog {
    /// `concept_attempts`.
    Attempts,
    /// `evaluation_logs`.
    Evaluations,
}

impl MonthLog {
    /// Every month-partitioned table.
    pub const ALL: [MonthLog; 2] = [MonthLog::Attempts, MonthLog::Evaluations];

    /// The parent table.
    pub const fn table(self) -> &'static str {
        match self {
            MonthLog::Attempts => "concept_attempts",
            MonthLog::Evaluations => "evaluation_logs",
        }
    }

    /// The month a partition name `<table>_YYYY_MM` covers.
    pub fn partition_month(self, name: &str) -> Option<NaiveDate> {
        let rest = name.strip_prefix(self.table())?.strip_prefix('_')?;
        let (y, m) = rest.split_once('_')?;
        NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1)
    }
}

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

impl Store {
    /// Makes sure `log` has a month partition for each month; returns the
    /// months whose rows will go to DEFAULT because it already holds rows
    /// of them.
    pub async fn ensure_month_partitions(
        &self,
        log: MonthLog,
        months: &[NaiveDate],
    ) -> Result<Vec<NaiveDate>, StoreError> {
        in_tx!(self, |c| {
            let mut to_default = Vec::new();
            for m in months {
                let r: Vec<EnsureResult> =
                    diesel::sql_query("SELECT novyra_ensure_month_partition($1, $2) AS part")
                        .bind::<diesel::sql_types::Text, _>(log.table())
                        .bind::<diesel::sql_types::Date, _>(*m)
                        .load(c)
                        .await?;
                if <[_]>::first(&r).and_then(|r| r.part.as_ref()).is_none() {
                    to_default.push(*m);
                }
            }
            Ok(to_default)
        })
    }

    /// Creates the partitions of `from`'s month and `ahead` months after it,
    /// for every log. Returns the months that could not get a partition
    /// because DEFAULT holds rows of them.
    pub async fn ensure_months_ahead(
        &self,
        from: NaiveDate,
        ahead: u32,
    ) -> Result<Vec<(MonthLog, NaiveDate)>, StoreError> {
        let mut stuck = Vec::new();
        for log in MonthLog::ALL {
            for m in self
                .ensure_month_partitions(log, &months_from(from, ahead))
                .await?
            {
                stuck.push((log, m));
            }
        }
        Ok(stuck)
    }

    /// Detaches the month partitions of every log whose month ends on or
    /// before `cutoff` (needs the owner role). Returns the detached table
    /// names.
    pub async fn detach_partitions_before(
        &self,
        cutoff: NaiveDate,
    ) -> Result<Vec<String>, StoreError> {
        let mut detached = Vec::new();
        for log in MonthLog::ALL {
            for (name, _) in self.month_partitions(log).await? {
                let Some(month) = log.partition_month(&name) else {
                    continue;
                };
                let Some(end) = month.checked_add_months(Months::new(1)) else {
                    continue;
                };
                if end <= cutoff {
                    in_tx!(self, |c| {
                        diesel::sql_query(format!(
                            "ALTER TABLE {} DETACH PARTITION \"{name}\"",
                            log.table()
                        ))
                        .execute(c)
                        .await?;
                        Ok(())
                    })?;
                    if log == MonthLog::Attempts {
                        // The dedup ids of a detached month go with it, so
                        // the id table stays as long as the attempts it
                        // guards: exactly this partition's ids, read from
                        // the table it now is (an old month's attempt kept
                        // in DEFAULT keeps its claim). After the detach and
                        // in a transaction of its own, so the ingest waits
                        // only for the detach. If this fails, the ids stay:
                        // harmless, those events are stored (detached) and
                        // a re-sent copy is rightly a duplicate.
                        in_tx!(self, |c| {
                            diesel::sql_query(format!(
                                "DELETE FROM attempt_event_ids i USING \"{name}\" p \
                                 WHERE i.event_id = p.event_id"
                            ))
                            .execute(c)
                            .await?;
                            Ok(())
                        })?;
                    }
                    detached.push(name);
                }
            }
        }
        Ok(detached)
    }

    /// Row counts per partition of `log` (name, rows), DEFAULT included.
    pub async fn month_partitions(&self, log: MonthLog) -> Result<Vec<(String, i64)>, StoreError> {
        in_tx!(self, |c| {
            // NB: counted through the parent, whose privileges are the only ones
            // checked; partitions created later are owned by the migrator and the
            // runtime or analyst role may not read them directly.
            let table = log.table();
            let rows: Vec<PartRow> = diesel::sql_query(format!(
                "SELECT c.relname::text AS name, coalesce(n.rows, 0)::bigint AS rows \
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 LEFT JOIN (SELECT tableoid, count(*) AS rows FROM {table} GROUP BY tableoid) n ON n.tableoid = c.oid \
                 WHERE i.inhparent = '{table}'::regclass ORDER BY c.relname"
            ))
            .load(c)
            .await?;
            Ok(rows.into_iter().map(|r| (r.name, r.rows)).collect())
        })
    }

    /// [`Store::month_partitions`] of `concept_attempts`.
    pub async fn attempt_partitions(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.month_partitions(MonthLog::Attempts).await
    }
}

#[derive(diesel::QueryableByName)]
struct EnsureResult {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    part: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct PartRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    rows: i64,
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
        let a = MonthLog::Attempts;
        assert_eq!(a.partition_month("concept_attempts_2027_02"), Some(m[3]));
        assert_eq!(a.partition_month("concept_attempts_default"), None);
        let e = MonthLog::Evaluations;
        assert_eq!(e.partition_month("evaluation_logs_2027_02"), Some(m[3]));
        assert_eq!(e.partition_month("concept_attempts_2027_02"), None);
    }
}
