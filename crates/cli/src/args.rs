//! The command line: every command, its options and an example, as clap
//! reads them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use novyra_pipeline::loadgen::LoadgenOptions;

use crate::{dlq, lag, replay, tail};

#[derive(Parser)]
#[command(
    name = "novyra",
    version,
    about = "NOVYRA Stream: learning events from Kafka into PostgreSQL and Neo4j",
    after_help = "Exit status: 0 success, 1 error, 2 usage, 3 a threshold or check failed \
        on purpose (lag --max-lag, replay --verify, a reconcile the delete brake refused).\n\
        Output to a closed pipe ends quietly (novyra tail attempts --last 100 | head -1)."
)]
pub(crate) struct Cli {
    /// TOML config file; environment variables override it.
    #[arg(long, global = true, env = "NOVYRA_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    pub(crate) log_json: bool,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Run every consumer group in one process (dev / all-in-one).
    #[command(after_help = "Example:\n  novyra run --exit-when-idle")]
    Run {
        /// Return once every group has caught up.
        #[arg(long)]
        exit_when_idle: bool,
    },
    /// Run the novyra-ingest group (attempts → Postgres) and the outbox relay.
    #[command(after_help = "Example:\n  novyra ingest --config /etc/novyra/novyra.toml")]
    Ingest,
    /// Run the novyra-catalog group (concepts, prerequisites → Postgres).
    #[command(after_help = "Example:\n  novyra catalog")]
    Catalog,
    /// Run the novyra-audit group (evaluations → the append-only audit log).
    #[command(after_help = "Example:\n  novyra audit")]
    Audit,
    /// Run the novyra-graph group (→ Neo4j), or query the graph.
    #[command(after_help = "Example:\n  novyra graph            # the sink
  novyra graph next --user u-17 --limit 5")]
    Graph {
        #[command(subcommand)]
        query: Option<GraphCmd>,
    },
    /// Database maintenance.
    #[command(after_help = "Example:\n  novyra db migrate")]
    Db {
        #[command(subcommand)]
        cmd: DbCmd,
    },
    /// Create the pipeline's topics (partitions and cleanup policies per DESIGN.md).
    #[command(after_help = "Example:\n  novyra topics")]
    Topics,
    /// The Kafka ACLs of every principal, derived from the topic table
    /// (apply them with deploy/kafka-acls.py).
    #[command(after_help = "Example:\n  novyra acls
  novyra acls --json | .stack/venv/bin/python deploy/kafka-acls.py --bootstrap 127.0.0.1:9092")]
    Acls {
        /// JSON lines, one ACL each, for deploy/kafka-acls.py.
        #[arg(long)]
        json: bool,
        /// Prefix of the principals' user names.
        #[arg(long, default_value = "novyra-")]
        principal_prefix: String,
    },
    /// Register the Avro schemas (subject `<topic>-value`, BACKWARD).
    #[command(after_help = "Example:\n  novyra schemas")]
    Schemas,
    /// Publish events given as JSON lines (stdin or a file).
    #[command(
        after_help = "Example:\n  novyra produce --topic concepts concepts.jsonl
  novyra produce --topic prerequisites --delete 'c-1>c-2'"
    )]
    Produce {
        /// Topic kind: attempts, concepts, prerequisites or mastery.
        #[arg(long)]
        topic: String,
        /// File of JSON lines; stdin if absent.
        file: Option<PathBuf>,
        /// Publish a tombstone for this key instead (repeatable): deletes a
        /// concept (`id`), unlinks (`pre>concept`) or resets mastery (`user/concept`).
        #[arg(long = "delete", value_name = "KEY", conflicts_with = "file")]
        delete: Vec<String>,
    },
    /// Generate a curriculum and simulated students, and publish their attempts.
    #[command(after_help = "Example:\n  novyra loadgen --students 100 --attempts 5000 --rate 200")]
    Loadgen(LoadgenArgs),
    /// Repair drift: the compacted topics are the truth for Neo4j, Postgres
    /// for the mastery topic.
    #[command(after_help = "Example:\n  novyra reconcile --dry-run --json")]
    Reconcile {
        /// Report the drift without repairing it.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Only ids starting with this (a graph shared by several pipelines).
        #[arg(long, default_value = "")]
        id_prefix: String,
        /// Repair even if that deletes more than
        /// `pipeline.reconcile_max_delete_share` of the graph (default 5%);
        /// without it such a run writes nothing and exits 3.
        #[arg(long)]
        force: bool,
    },
    /// Consumer-group lag per partition: offsets, records, seconds, owner;
    /// exit code 3 above a threshold.
    #[command(after_help = "Example:\n  novyra lag --group ingest --max-lag 1000 || echo behind")]
    Lag(lag::LagArgs),
    /// Print a topic's records decoded (JSON lines or a table); never joins
    /// a group or commits.
    #[command(after_help = "Example:\n  novyra tail attempts --last 5 --table
  novyra tail dlq --from-beginning --where headers.__connect.errors.exception.class.name=time_out_of_range | head -1")]
    Tail(tail::TailArgs),
    /// Rewind a consumer group to the start of its topics (the catalog
    /// after a Postgres restore: it re-applies the compacted topics). The
    /// group's workers must be stopped.
    #[command(after_help = "Example:\n  novyra rewind --group catalog")]
    Rewind {
        /// Group suffix: catalog or graph.
        #[arg(long)]
        group: String,
    },
    /// Rebuild Postgres (into an empty schema) and/or Neo4j from the topics,
    /// with progress; --verify compares with the live tables (exit 3 if not equal).
    #[command(
        after_help = "Example:\n  novyra replay --target postgres --schema replay1 --verify"
    )]
    Replay(replay::ReplayArgs),
    /// Dead letters: list them, or replay chosen ones to their source topic.
    #[command(after_help = "Example:\n  novyra dlq list --class time_out_of_range | head")]
    Dlq {
        #[command(subcommand)]
        cmd: dlq::DlqCmd,
    },
    /// Print the pipeline summary and run the consistency checks.
    #[command(after_help = "Example:\n  novyra summary --expect-attempts 25000")]
    Summary {
        /// Number of attempts produced, to check against the rows stored.
        #[arg(long)]
        expect_attempts: Option<usize>,
    },
    /// The whole demo: topics, schemas, generated data, run until idle, summary.
    #[command(after_help = "Example:\n  novyra demo --attempts 10000")]
    Demo(LoadgenArgs),
}

#[derive(Subcommand)]
pub(crate) enum GraphCmd {
    /// Concepts a user can learn next (prerequisites mastered, itself not).
    #[command(after_help = "Example:\n  novyra graph next --user u-17 --limit 5 --json")]
    Next {
        /// User id.
        #[arg(long)]
        user: String,
        /// How many.
        #[arg(long, default_value_t = 10)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What a user still has to learn to reach a concept, prerequisites first.
    #[command(after_help = "Example:\n  novyra graph path --user u-17 --target c-algebra-3")]
    Path {
        /// User id.
        #[arg(long)]
        user: String,
        /// Target concept id.
        #[arg(long)]
        target: String,
        /// Longest prerequisite chain followed (at most 32).
        #[arg(long, default_value_t = 8)]
        max_hops: u32,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Attempted, not mastered concepts that other concepts depend on.
    #[command(after_help = "Example:\n  novyra graph weak --user u-17")]
    Weak {
        /// User id.
        #[arg(long)]
        user: String,
        /// How many.
        #[arg(long, default_value_t = 10)]
        limit: i64,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Export the graph as JSON lines (logical backup) and print a checksum.
    #[command(after_help = "Example:\n  novyra graph export --out graph.jsonl")]
    Export {
        /// Output file; `-` for stdout.
        #[arg(long)]
        out: PathBuf,
        /// Only ids starting with this.
        #[arg(long, default_value = "")]
        id_prefix: String,
    },
    /// Import an export (idempotent MERGEs; newer mastery edges are kept).
    #[command(after_help = "Example:\n  novyra graph import graph.jsonl")]
    Import {
        /// The export file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum DbCmd {
    /// Apply pending migrations (as the migration role).
    #[command(
        after_help = "Example:\n  MIGRATION_DATABASE_URL=postgres://novyra_migrator@db/novyra novyra db migrate"
    )]
    Migrate,
    /// List attempt partitions with row counts (DEFAULT included); optionally
    /// create months ahead or detach old months first.
    #[command(after_help = "Example:\n  novyra db partitions --ensure-ahead 3")]
    Partitions {
        /// Create the current month's partition and this many after it.
        #[arg(long, value_name = "MONTHS")]
        ensure_ahead: Option<u32>,
        /// Detach month partitions that end on or before this date (YYYY-MM-DD);
        /// the tables stay for archiving. Runs as the migration role.
        #[arg(long, value_name = "DATE")]
        detach_before: Option<chrono::NaiveDate>,
    },
    /// Refresh the analysts' leaderboard now (the ingest does it every
    /// pipeline.leaderboard_refresh_secs).
    #[command(after_help = "Example:\n  novyra db refresh-leaderboard")]
    RefreshLeaderboard,
    /// The leaderboard's top students, read where analysts read:
    /// ANALYTICS_DATABASE_URL (a read replica) when set, else DATABASE_URL.
    #[command(
        after_help = "Example:\n  ANALYTICS_DATABASE_URL=postgres://novyra_analyst:…@127.0.0.1:5433/novyra \\\n    novyra db leaderboard --limit 10"
    )]
    Leaderboard {
        /// How many rows.
        #[arg(long, default_value_t = 10)]
        limit: i64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
pub(crate) struct LoadgenArgs {
    /// Concepts in the curriculum.
    #[arg(long, default_value_t = 60)]
    pub(crate) concepts: usize,
    /// Domains.
    #[arg(long, default_value_t = 6)]
    pub(crate) domains: usize,
    /// Students.
    #[arg(long, default_value_t = 250)]
    pub(crate) students: usize,
    /// Attempts in total.
    #[arg(long, default_value_t = 25_000)]
    pub(crate) attempts: usize,
    /// RNG seed (same seed, same data).
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Attempts per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub(crate) rate: u64,
    /// Spread attempts over this many days up to now.
    #[arg(long, default_value_t = 75)]
    pub(crate) days: i64,
    /// Prefix for generated ids (default: a fresh run id, so runs never collide).
    #[arg(long)]
    pub(crate) id_prefix: Option<String>,
}

impl LoadgenArgs {
    pub(crate) fn options(&self) -> LoadgenOptions {
        LoadgenOptions {
            concepts: self.concepts,
            domains: self.domains,
            students: self.students,
            attempts: self.attempts,
            seed: self.seed,
            rate: self.rate,
            days: self.days,
            id_prefix: self
                .id_prefix
                .clone()
                .unwrap_or_else(|| format!("r{}-", chrono::Utc::now().format("%m%d%H%M%S"))),
        }
    }
}
