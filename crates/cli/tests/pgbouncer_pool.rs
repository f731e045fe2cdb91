//! Twelve ingest processes, one per attempts partition, behind PgBouncer's
//! transaction pool (`make test` points DATABASE_URL at it): each keeps a
//! pool of client connections of its own, yet Postgres serves them all
//! from PgBouncer's few server connections, and every attempt is stored
//! exactly once.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use novyra_pipeline::loadgen::{self, LoadgenOptions};

const PROCESSES: usize = 12;
const ATTEMPTS: usize = 24_000;

/// `host:port` of a `postgres://user:pw@host:port/db?...` URL.
fn host_port(url: &str) -> (String, String) {
    let rest = url.split_once('@').expect("user@host in DATABASE_URL").1;
    let hp = rest.split(['/', '?']).next().expect("host");
    let (h, p) = hp.rsplit_once(':').unwrap_or((hp, "5432"));
    (h.to_owned(), p.to_owned())
}

/// Rows of a PgBouncer admin command, by column name. The admin console
/// speaks only the simple query protocol, which psql uses.
fn admin(url: &str, sql: &str) -> Result<Vec<HashMap<String, String>>, String> {
    let (host, port) = host_port(url);
    let out = Command::new("psql")
        .args([
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            "novyra_monitor",
            "-d",
            "pgbouncer",
        ])
        .args(["-X", "--csv", "-c", sql])
        .env("PGPASSWORD", "novyra_monitor")
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let head: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect();
    Ok(lines
        .map(|l| {
            head.iter()
                .cloned()
                .zip(l.split(',').map(str::to_owned))
                .collect()
        })
        .collect())
}

fn num(row: &HashMap<String, String>, col: &str) -> i64 {
    row.get(col).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_ingest_processes_share_a_small_server_pool() {
    let env = Env::new("pgbouncer").await;
    let url = env.cfg.database.url.clone();
    let databases = admin(&url, "SHOW DATABASES").unwrap_or_else(|e| {
        panic!("DATABASE_URL must go through PgBouncer (make test sets it): {e}")
    });
    let dbname = url
        .rsplit_once('/')
        .map(|(_, d)| d.split('?').next().unwrap_or(d).to_owned())
        .expect("database in DATABASE_URL");
    let pool_size = databases
        .iter()
        .find(|r| r.get("name") == Some(&dbname))
        .map(|r| num(r, "pool_size"))
        .expect("DATABASE_URL's database in PgBouncer");
    assert!(
        pool_size < PROCESSES as i64,
        "the point is a server pool smaller than the number of processes ({pool_size})"
    );

    let o = LoadgenOptions {
        concepts: 24,
        domains: 3,
        students: 1_200,
        attempts: ATTEMPTS,
        seed: 12,
        rate: 0,
        days: 20,
        id_prefix: format!("{}-", env.name),
    };
    loadgen::generate_and_publish(&env.cfg, &o, true)
        .await
        .expect("publish");

    // Each process names itself, so PgBouncer's client list tells ours
    // apart from the other tests' running beside this one.
    let app = format!("{}-ingest", env.name);
    let sep = if url.contains('?') { '&' } else { '?' };
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            let mut cfg = env.cfg.clone();
            cfg.database.url = format!("{url}{sep}application_name={app}{i}");
            spawn_ingest(
                &cfg,
                "[pipeline]\nmax_batch = 200\n[database]\nmax_connections = 4\n",
                &format!("{}-{i}", env.name),
            )
        })
        .collect();

    // Sample while they work: our clients, and the server connections of
    // the whole (database, user) pool they share with everyone else.
    let end = attempts_end(&env.cfg);
    let started = Instant::now();
    let (mut most_processes, mut most_clients, mut most_servers) = (0, 0, 0);
    loop {
        let clients = admin(&url, "SHOW CLIENTS").expect("SHOW CLIENTS");
        let ours: Vec<_> = clients
            .iter()
            .filter(|r| {
                r.get("application_name")
                    .is_some_and(|a| a.starts_with(&app))
            })
            .collect();
        let processes: BTreeSet<_> = ours
            .iter()
            .filter_map(|r| r.get("application_name"))
            .collect();
        most_processes = most_processes.max(processes.len());
        most_clients = most_clients.max(ours.len());
        let pools = admin(&url, "SHOW POOLS").expect("SHOW POOLS");
        for p in pools.iter().filter(|r| {
            r.get("database") == Some(&dbname)
                && r.get("user")
                    .is_some_and(|u| url.contains(&format!("//{u}:")))
        }) {
            let servers: i64 = ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"]
                .iter()
                .map(|c| num(p, c))
                .sum();
            most_servers = most_servers.max(servers);
        }
        if stored_offsets(&env.cfg).await >= end {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "not caught up after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_caught_up(&env.cfg, Duration::from_secs(120)).await;
    for c in children {
        terminate(c);
    }
    println!(
        "{PROCESSES} processes: up to {most_processes} connected at once with {most_clients} \
         client connections; server connections of the pool at most {most_servers} (pool_size {pool_size})"
    );
    assert_eq!(
        most_processes, PROCESSES,
        "every process was connected at once"
    );
    assert!(
        most_clients > pool_size as usize,
        "more client connections ({most_clients}) than the server pool ({pool_size})"
    );
    assert!(
        most_servers <= pool_size,
        "the server pool grew past its size: {most_servers} > {pool_size}"
    );
    assert_audit_consistent(&env.cfg, ATTEMPTS as i64).await;
}
