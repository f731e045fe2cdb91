"""`make chaos`: a seeded, randomized fault schedule against the real local
stack, with a checker written independently of the pipeline's code.

While a load of attempts (with re-published duplicates and poison),
late-arriving concepts, BKT parameter changes, prerequisite links and
unlinks flows through `novyra ingest` x2, `novyra catalog` and `novyra
graph`, a nemesis draws faults at random: SIGKILL of a worker, extra group
members joining and leaving, SIGKILL of the Kafka broker, Postgres, the
registry or Neo4j stopped for a while, `novyra reconcile` during an outage
(it must fail and write nothing) and during live writes. Afterwards, with
every fault healed and the pipeline drained, the checker verifies from what
it produced itself (never from the pipeline's code):

- every distinct event acknowledged by Kafka is stored exactly once;
- `mastery_records` equals a BKT replay (written here, in Python) of each
  user's distinct attempts in produce order with the final catalogue;
- the mastery topic's latest value per key equals `mastery_records`;
- Neo4j equals Postgres: concepts, links, and every MASTERED_BY edge's
  score and version;
- exactly the injected poison is in the DLQ;
- no worker exited except the ones the nemesis killed or stopped.

usage: chaos.py [--seed N] [--minutes M] [--report FILE]
env:   CHAOS_SEED, CHAOS_MINUTES (default 10), and the stack's variables
       (DATABASE_URL, KAFKA_BROKERS, SCHEMA_REGISTRY_URL, NEO4J_*), as the
       Makefile sets them.
Exit status: 0 without violations, 1 with.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from neo4j import GraphDatabase

ROOT = Path(__file__).resolve().parents[2]
NOVYRA = Path(os.environ.get("NOVYRA_BIN") or ROOT / "target" / "release" / "novyra")
STACK_RUN = Path(os.environ.get("NOVYRA_STACK_DIR", ROOT / ".stack")) / "run"
LOGS = Path(os.environ.get("CHAOS_LOG_DIR", "/tmp"))

USERS = 200
CONCEPTS = 12
FIRST_CONCEPTS = 6


def log(msg):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- BKT, again
# Written from DESIGN.md, not from the Rust code: the checker's own model.

def concept_params(c):
    d = c["difficulty"]
    d = 0.5 if d != d else min(max(d, 0.0), 1.0)
    base = [0.30 - 0.25 * d, 0.20 - 0.12 * d, 0.08 + 0.04 * d, 0.25 - 0.15 * d]
    over = [c.get("bkt_p_init"), c.get("bkt_p_transit"), c.get("bkt_p_slip"), c.get("bkt_p_guess")]
    return tuple(o if o is not None else b for o, b in zip(over, base))


DEFAULT_PARAMS = concept_params({"difficulty": 0.5})


def bkt_step(p, observed_correct, params):
    _, t, s, g = params
    if observed_correct:
        num = p * (1.0 - s)
        post = num / (num + (1.0 - p) * g)
    else:
        num = p * s
        post = num / (num + (1.0 - p) * (1.0 - g))
    return post + (1.0 - post) * t


def replay(attempts, params):
    """Final state of one (user, concept) from its ordered distinct attempts."""
    m = params[0]
    total = correct = 0
    weight = 0.0
    last = ""
    for a in attempts:
        m = bkt_step(m, a["correct"] and a["hints_used"] == 0, params)
        total += 1
        correct += 1 if a["correct"] else 0
        weight += 1.0 / (1.0 + max(a["hints_used"], 0))
        last = a["event_id"]
    return {"mastery": m, "attempts_total": total, "attempts_correct": correct,
            "confidence_weight": weight, "last_event_id": last}


# ---------------------------------------------------------------- processes

class Workers:
    """The pipeline's worker processes; notices any exit it did not cause."""

    def __init__(self, env, run):
        self.env, self.run = env, run
        self.procs = {}
        self.expected_exit = set()
        self.violations = []
        self.lock = threading.Lock()
        self.conf = LOGS / f"{run}.toml"
        self.conf.write_text("[pipeline]\nreconcile_interval_secs = 0\nleaderboard_refresh_secs = 0\n")

    def start(self, name, worker):
        logf = open(LOGS / f"{self.run}-{name}.log", "ab")
        p = subprocess.Popen([str(NOVYRA), worker, "--config", str(self.conf)], env=self.env,
                             stdout=subprocess.DEVNULL, stderr=logf)
        with self.lock:
            self.procs[name] = (worker, p)
            self.expected_exit.discard(name)
        return p

    def kill(self, name, sig=signal.SIGKILL):
        with self.lock:
            self.expected_exit.add(name)
            _, p = self.procs[name]
        p.send_signal(sig)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def remove(self, name):
        with self.lock:
            self.procs.pop(name, None)

    def check(self):
        with self.lock:
            for name, (worker, p) in list(self.procs.items()):
                code = p.poll()
                if code is not None and name not in self.expected_exit:
                    tail = (LOGS / f"{self.run}-{name}.log").read_text(errors="replace")[-1500:]
                    self.violations.append(f"worker {name} exited by itself with code {code}: ...{tail}")
                    self.expected_exit.add(name)

    def restart_dead(self):
        with self.lock:
            dead = [(n, w) for n, (w, p) in self.procs.items() if p.poll() is not None]
        for name, worker in dead:
            self.start(name, worker)

    def stop_all(self):
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)


def stack(script, action):
    subprocess.run(["bash", str(ROOT / "deploy" / script), action], check=True,
                   stdout=subprocess.DEVNULL)


def kafka_kill9():
    pid = int((STACK_RUN / "kafka.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    for _ in range(60):
        try:
            os.kill(pid, 0)
            time.sleep(0.5)
        except ProcessLookupError:
            return


# ---------------------------------------------------------------- load

class Load(threading.Thread):
    """Publishes the run's events and remembers what Kafka acknowledged."""

    def __init__(self, run, seed, registry_url, brokers):
        super().__init__(daemon=True)
        self.prefix, self.rng = run, random.Random(seed)
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        reg = SchemaRegistryClient({"url": registry_url})
        schema = lambda n: (ROOT / "schemas" / f"{n}.avsc").read_text()
        conf = {"auto.register.schemas": False, "use.latest.version": True}
        self.ser = {
            "attempts": AvroSerializer(reg, schema("ConceptAttempted"), conf=conf),
            "concepts": AvroSerializer(reg, schema("ConceptUpserted"), conf=conf),
            "prerequisites": AvroSerializer(reg, schema("PrerequisiteLinked"), conf=conf),
        }
        self.producer = Producer({
            "bootstrap.servers": brokers, "enable.idempotence": True, "linger.ms": 20,
            "message.timeout.ms": 900000, "queue.buffering.max.messages": 2000000,
            # Broker outages are the point here: librdkafka's connection
            # errors would drown the report.
            "log_level": 2,
        })
        # What was produced, in order, and what Kafka acknowledged.
        self.attempts = []            # every valid attempt produced (duplicates included)
        self.acked_ids = set()
        self.failed = []              # (kind, detail) of deliveries that failed
        self.concepts = {}            # id -> last produced value
        self.links = {}               # key -> value or None (tombstone)
        self.poison = []              # (topic, partition, offset) acked
        self.counts = {"attempts": 0, "duplicates": 0, "poison": 0, "concepts": 0,
                       "param_changes": 0, "links": 0, "unlinks": 0}
        self.published = set()
        self.seq = 0
        self.error = None             # why the load thread died, if it did

    def topic(self, t):
        return f"{self.prefix}.{t}"

    def produce(self, t, key, value, on_ack=None):
        def cb(err, msg):
            if err is not None:
                with self.lock:
                    self.failed.append((t, key, str(err)))
            elif on_ack:
                on_ack(msg)
        while True:
            try:
                self.producer.produce(self.topic(t), key=key.encode(), value=value, on_delivery=cb)
                break
            except BufferError:
                self.producer.poll(0.5)
        self.producer.poll(0)

    def encode(self, t, event):
        """Serializes through the registry, riding out its outages like a
        producing app would: the registry (and the Postgres it keeps its
        schemas in) is stopped on purpose here, and a subject's first use
        asks it for the latest version. Gives up only after 5 minutes."""
        deadline, delay = time.time() + 300, 0.2
        while True:
            try:
                return self.ser[t](event, SerializationContext(self.topic(t), MessageField.VALUE))
            except Exception:  # SchemaRegistryError, or the HTTP client's connection errors
                if time.time() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def concept_event(self, i, params=None):
        cid = f"{self.prefix}-c{i:02d}"
        ev = {"concept_id": cid, "name": f"concept {i} v{self.counts['concepts']}",
              "domain": "chaos", "difficulty": round(self.rng.uniform(0.0, 1.0), 3),
              "bkt_p_init": None, "bkt_p_transit": None, "bkt_p_slip": None, "bkt_p_guess": None,
              "updated_at": int(time.time() * 1000)}
        if cid in self.concepts:
            ev["difficulty"] = self.concepts[cid]["difficulty"]
        if params:
            ev.update(params)
        value = self.encode("concepts", ev)  # first: only what is sent is counted
        self.concepts[cid] = ev
        self.published.add(i)
        self.counts["concepts"] += 1
        self.produce("concepts", cid, value)

    def new_params(self):
        return {"bkt_p_init": round(self.rng.uniform(0.05, 0.5), 3),
                "bkt_p_transit": round(self.rng.uniform(0.05, 0.3), 3),
                "bkt_p_slip": round(self.rng.uniform(0.05, 0.2), 3),
                "bkt_p_guess": round(self.rng.uniform(0.05, 0.3), 3)}

    def attempt(self):
        self.seq += 1
        user = f"{self.prefix}-u{self.rng.randrange(USERS):03d}"
        ev = {"event_id": str(uuid.UUID(int=self.rng.getrandbits(128))), "user_id": user,
              "concept_id": f"{self.prefix}-c{self.rng.randrange(CONCEPTS):02d}",
              "occurred_at": int(time.time() * 1000), "correct": self.rng.random() < 0.65,
              "hints_used": self.rng.choice([0, 0, 0, 1, 2]),
              "duration_ms": self.rng.randint(1000, 60000), "rubric": None}
        self.send_attempt(ev)

    def send_attempt(self, ev):
        def acked(_msg, eid=ev["event_id"]):
            with self.lock:
                self.acked_ids.add(eid)
        value = self.encode("attempts", ev)  # first: only what is sent is counted
        with self.lock:
            self.attempts.append(ev)
        self.counts["attempts"] += 1
        self.produce("attempts", ev["user_id"], value, acked)

    def poison_record(self):
        user = f"{self.prefix}-u{self.rng.randrange(USERS):03d}"
        kind = self.rng.choice(["bad_magic", "unknown_schema", "negative_hints"])
        if kind == "bad_magic":
            value = b"\x07not avro at all"
        elif kind == "unknown_schema":
            value = b"\x00" + (987654321).to_bytes(4, "big") + b"\x02ab"
        else:
            value = self.encode("attempts", {
                "event_id": str(uuid.UUID(int=self.rng.getrandbits(128))), "user_id": user,
                "concept_id": f"{self.prefix}-c00", "occurred_at": int(time.time() * 1000),
                "correct": True, "hints_used": -1, "duration_ms": 10, "rubric": None})

        def acked(msg):
            with self.lock:
                self.poison.append((msg.topic(), msg.partition(), msg.offset()))
        self.counts["poison"] += 1
        self.produce("attempts", user, value, acked)

    def link(self):
        pubs = sorted(self.published)
        if len(pubs) < 2:
            return
        a, b = sorted(self.rng.sample(pubs, 2))
        key = f"{self.prefix}-c{a:02d}>{self.prefix}-c{b:02d}"
        linked = sorted(k for k, v in self.links.items() if v)
        if linked and self.rng.random() < 0.3:
            key = self.rng.choice(linked)
            self.links[key] = None
            self.counts["unlinks"] += 1
            self.produce("prerequisites", key, None)
        else:
            ev = {"prerequisite_id": f"{self.prefix}-c{a:02d}", "concept_id": f"{self.prefix}-c{b:02d}",
                  "linked_at": int(time.time() * 1000)}
            value = self.encode("prerequisites", ev)  # first: only what is sent is counted
            self.links[key] = ev
            self.counts["links"] += 1
            self.produce("prerequisites", key, value)

    def start_catalogue(self):
        for i in range(FIRST_CONCEPTS):
            self.concept_event(i)

    def publish_rest(self):
        for i in range(CONCEPTS):
            if i not in self.published:
                self.concept_event(i)

    def run(self):
        try:
            self.load()
        except Exception as e:  # reported as a violation, not a stray traceback
            self.error = f"{type(e).__name__}: {e}"
            raise

    def load(self):
        r = self.rng
        while not self.stop_flag.is_set():
            for _ in range(15):
                if self.attempts and r.random() < 0.02:
                    with self.lock:
                        again = dict(r.choice(self.attempts))
                    self.counts["duplicates"] += 1
                    self.send_attempt(again)
                else:
                    self.attempt()
            x = r.random()
            if x < 0.004:
                self.poison_record()
            elif x < 0.010 and len(self.published) < CONCEPTS:
                self.concept_event(r.choice([i for i in range(CONCEPTS) if i not in self.published]))
            elif x < 0.016 and self.published:
                self.counts["param_changes"] += 1
                self.concept_event(r.choice(sorted(self.published)), self.new_params())
            elif x < 0.026:
                self.link()
            time.sleep(0.1)

    def finish(self):
        self.stop_flag.set()
        self.join()
        self.publish_rest()
        left = self.producer.flush(900)
        if left:
            self.failed.append(("flush", "", f"{left} records never delivered"))


# ---------------------------------------------------------------- the nemesis

class Nemesis:
    def __init__(self, seed, minutes, workers, novyra_env, run):
        self.rng = random.Random(seed * 7919 + 1)
        self.workers, self.env, self.run = workers, novyra_env, run
        self.max_outage = min(120.0, max(15.0, minutes * 60 / 8))
        self.schedule = []
        self.violations = []
        self.extra = 0

    def note(self, kind, started, detail=""):
        self.schedule.append({"t": round(started - self.t0, 1), "fault": kind,
                              "seconds": round(time.time() - started, 1), "detail": detail})
        log(f"fault {kind} ({detail}) for {time.time() - started:.0f}s")

    def outage_seconds(self):
        return self.rng.uniform(10.0, self.max_outage)

    def reconcile(self, expect_ok, why):
        started = time.time()
        p = subprocess.run([str(NOVYRA), "reconcile", "--json", "--id-prefix", f"{self.run}-"],
                           env=self.env, capture_output=True, text=True, timeout=600)
        ok = p.returncode == 0
        if ok != expect_ok:
            self.violations.append(
                f"reconcile {why}: exit {p.returncode}, expected {'0' if expect_ok else 'non-zero'}: "
                f"{p.stdout.strip()[-500:]} {p.stderr.strip()[-500:]}")
        self.note("reconcile", started, f"{why}, exit {p.returncode}")
        return p

    def outage(self, kind, script):
        started = time.time()
        secs = self.outage_seconds()
        stack(script, "stop")
        time.sleep(min(5.0, secs / 2))
        if self.rng.random() < 0.5:
            self.reconcile(False, f"during {kind} outage")
        time.sleep(max(0.0, secs - (time.time() - started)))
        stack(script, "start")
        if script == "postgres.sh":
            # NB: Apicurio 3.0.x keeps dead connections after its Postgres
            # restarts (upstream #5458); the stack restarts it (README).
            stack("apicurio.sh", "stop")
            stack("apicurio.sh", "start")
        self.note(kind, started)

    def one(self):
        kind = self.rng.choice(["kill_worker", "kill_worker", "extra_member", "kill_kafka",
                                "stop_postgres", "stop_registry", "stop_neo4j", "reconcile_live"])
        started = time.time()
        if kind == "kill_worker":
            name = self.rng.choice(sorted(n for n in self.workers.procs if not n.startswith("extra")))
            self.workers.kill(name)
            time.sleep(self.rng.uniform(0.5, 5.0))
            self.workers.start(name, self.workers.procs[name][0])
            self.note(kind, started, name)
        elif kind == "extra_member":
            self.extra += 1
            worker = self.rng.choice(["ingest", "graph", "catalog"])
            name = f"extra{self.extra}-{worker}"
            self.workers.start(name, worker)
            time.sleep(self.rng.uniform(10.0, 40.0))
            self.workers.kill(name, signal.SIGTERM)
            self.workers.remove(name)
            self.note(kind, started, name)
        elif kind == "kill_kafka":
            kafka_kill9()
            time.sleep(self.rng.uniform(5.0, min(30.0, self.max_outage)))
            stack("kafka.sh", "start")
            self.note(kind, started)
        elif kind == "stop_postgres":
            self.outage(kind, "postgres.sh")
        elif kind == "stop_registry":
            self.outage(kind, "apicurio.sh")
        elif kind == "stop_neo4j":
            self.outage(kind, "neo4j.sh")
        else:
            self.reconcile(True, "during live writes")

    def loop(self, until):
        self.t0 = time.time()
        while time.time() < until:
            time.sleep(self.rng.uniform(3.0, 15.0))
            if time.time() >= until:
                break
            self.workers.check()
            try:
                self.one()
            except (subprocess.SubprocessError, OSError) as e:
                self.violations.append(f"the nemesis could not heal a fault: {e}")
                break
            self.workers.check()


# ---------------------------------------------------------------- the checker

def read_topic(brokers, topic, value_of):
    """Every record of `topic` up to its current end: (key, value, headers)."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"chaos-check-{uuid.uuid4()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 2})
    parts = c.list_topics(topic, timeout=30).topics[topic].partitions
    ends = {}
    for p in parts:
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        if high > low:
            ends[p] = high
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    out = []
    deadline = time.time() + 120
    while ends and time.time() < deadline:
        m = c.poll(1.0)
        if m is None or m.error():
            continue
        if m.partition() in ends and m.offset() < ends[m.partition()]:
            out.append((m.key().decode() if m.key() else None, value_of(m), m.headers() or []))
            if m.offset() + 1 >= ends[m.partition()]:
                del ends[m.partition()]
    c.close()
    if ends:
        raise RuntimeError(f"{topic}: could not read to the end of partitions {sorted(ends)}")
    return out


def wait_drained(env, db_url, schema, timeout):
    """Until every group has caught up, the outbox and recompute queue are empty."""
    deadline = time.time() + timeout
    calm = 0
    while time.time() < deadline:
        p = subprocess.run([str(NOVYRA), "lag", "--json"], env=env, capture_output=True, text=True)
        lag = None
        if p.returncode == 0:
            lag = sum(int(json.loads(line)["lag"]) for line in p.stdout.splitlines() if line.strip())
        try:
            with psycopg.connect(db_url) as db:
                db.execute(f'SET LOCAL search_path TO "{schema}"')  # one transaction: PgBouncer-safe
                outbox = db.execute("SELECT count(*) FROM mastery_outbox").fetchone()[0]
                queued = db.execute("SELECT count(*) FROM mastery_recompute").fetchone()[0]
        except psycopg.Error:
            outbox = queued = None
        calm = calm + 1 if (lag == 0 and outbox == 0 and queued == 0) else 0
        if calm >= 3:
            return True
        time.sleep(2)
    return False


def check(load, run, env, violations):
    brokers = env["KAFKA_BROKERS"]
    counts = {}
    # Postgres
    with psycopg.connect(env["DATABASE_URL"]) as db:
        db.execute(f'SET LOCAL search_path TO "{run}"')  # one transaction: PgBouncer-safe
        stored = db.execute("SELECT event_id, count(*) FROM concept_attempts GROUP BY 1").fetchall()
        rows = db.execute(
            "SELECT user_id, concept_id, mastery, attempts_total, attempts_correct, "
            "confidence_weight, version, last_event_id FROM mastery_records").fetchall()
        pg_concepts = {r[0]: r[1:] for r in db.execute(
            "SELECT id, name, bkt_p_init, bkt_p_transit, bkt_p_slip, bkt_p_guess FROM concepts")}
        pg_links = set(db.execute("SELECT prerequisite_id, concept_id FROM concept_prerequisites").fetchall())

    # 1. every distinct acknowledged event stored once
    twice = [e for e, n in stored if n > 1]
    stored_ids = {e for e, _ in stored}
    valid_ids = {a["event_id"] for a in load.attempts}
    missing = load.acked_ids - stored_ids
    unexpected = stored_ids - valid_ids
    counts["distinct_events_acked"] = len(load.acked_ids)
    counts["attempt_rows"] = sum(n for _, n in stored)
    if twice:
        violations.append(f"{len(twice)} events stored more than once, e.g. {twice[:3]}")
    if missing:
        violations.append(f"{len(missing)} acknowledged events not stored, e.g. {sorted(missing)[:3]}")
    if unexpected:
        violations.append(f"{len(unexpected)} stored events never produced, e.g. {sorted(unexpected)[:3]}")

    # 2. the catalogue as produced, and mastery as a replay with it
    want_concepts = {cid: concept_params(c) for cid, c in load.concepts.items()}
    for cid, c in load.concepts.items():
        got = pg_concepts.get(cid)
        if got is None or got[0] != c["name"] or tuple(got[1:]) != want_concepts[cid]:
            violations.append(f"concept {cid}: postgres has {got}, produced {c['name']} {want_concepts[cid]}")
    want_links = {(v["prerequisite_id"], v["concept_id"]) for v in load.links.values() if v}
    if pg_links != want_links:
        violations.append(f"links: postgres {len(pg_links)}, produced {len(want_links)}; "
                          f"diff {sorted(pg_links ^ want_links)[:4]}")
    per_pair, seen = {}, set()
    for a in load.attempts:               # produce order is each user's order
        if a["event_id"] in seen or a["event_id"] not in stored_ids:
            continue
        seen.add(a["event_id"])
        per_pair.setdefault((a["user_id"], a["concept_id"]), []).append(a)
    pg = {(r[0], r[1]): r for r in rows}
    counts["mastery_rows"] = len(pg)
    if set(pg) != set(per_pair):
        violations.append(f"mastery rows for {len(pg)} pairs, attempts for {len(per_pair)}")
    bad = []
    for key, attempts in per_pair.items():
        want = replay(attempts, want_concepts.get(key[1], DEFAULT_PARAMS))
        r = pg.get(key)
        if r is None or (r[2], r[3], r[4], r[5], r[7]) != (
                want["mastery"], want["attempts_total"], want["attempts_correct"],
                want["confidence_weight"], want["last_event_id"]):
            bad.append((key, r, want))
    if bad:
        violations.append(f"{len(bad)} mastery rows differ from a BKT replay with the final "
                          f"catalogue, e.g. {bad[0]}")

    # 3. the mastery topic's latest value per key equals mastery_records
    reg = SchemaRegistryClient({"url": env["SCHEMA_REGISTRY_URL"]})
    deser = AvroDeserializer(reg)
    topic = f"{run}.mastery"
    latest = {}
    for key, value, _ in read_topic(brokers, topic, lambda m: deser(
            m.value(), SerializationContext(topic, MessageField.VALUE)) if m.value() else None):
        latest[key] = value
    latest = {k: v for k, v in latest.items() if v is not None}
    counts["mastery_topic_keys"] = len(latest)
    topic_bad = [k for k, v in latest.items()
                 if tuple(k.split("/", 1)) not in pg
                 or (v["mastery"], v["version"]) != (pg[tuple(k.split("/", 1))][2], pg[tuple(k.split("/", 1))][6])]
    if len(latest) != len(pg) or topic_bad:
        violations.append(f"mastery topic: {len(latest)} keys vs {len(pg)} rows, "
                          f"{len(topic_bad)} differ, e.g. {topic_bad[:3]}")

    # 4. Neo4j equals Postgres
    uri = env["NEO4J_URI"]
    uri = uri if "://" in uri else f"bolt://{uri}"
    with GraphDatabase.driver(uri, auth=(env["NEO4J_USER"], env["NEO4J_PASSWORD"])) as drv:
        with drv.session() as s:
            p = f"{run}-"
            nodes = {r["id"]: r["name"] for r in s.run(
                "MATCH (c:Concept) WHERE c.id STARTS WITH $p RETURN c.id AS id, c.name AS name", p=p)}
            links = {(r["a"], r["b"]) for r in s.run(
                "MATCH (a:Concept)-[:PREREQUISITE_OF]->(b:Concept) WHERE b.id STARTS WITH $p "
                "RETURN a.id AS a, b.id AS b", p=p)}
            edges = {(r["u"], r["c"]): (r["s"], r["v"]) for r in s.run(
                "MATCH (u:User)-[r:MASTERED_BY]->(c:Concept) WHERE u.id STARTS WITH $p "
                "RETURN u.id AS u, c.id AS c, r.score AS s, r.version AS v", p=p)}
    counts["graph_edges"] = len(edges)
    want_nodes = {cid: v[0] for cid, v in pg_concepts.items()}
    if nodes != want_nodes:
        diff = sorted(set(nodes.items()) ^ set(want_nodes.items()))[:4]
        violations.append(f"neo4j concepts differ from postgres: {diff}")
    if links != pg_links:
        violations.append(f"neo4j links differ from postgres: {sorted(links ^ pg_links)[:4]}")
    edge_bad = [k for k, r in pg.items() if edges.get(k) != (r[2], r[6])]
    extra = [k for k in edges if k not in pg]
    if edge_bad or extra:
        violations.append(f"neo4j MASTERED_BY: {len(edge_bad)} differ from postgres, {len(extra)} extra, "
                          f"e.g. {(edge_bad + extra)[:2]} -> {[edges.get(k) for k in edge_bad[:2]]}")

    # 5. exactly the injected poison in the DLQ
    dlq = set()
    for _, _, headers in read_topic(brokers, f"{run}.dlq", lambda m: None):
        h = {k: (v.decode() if v else "") for k, v in headers}
        dlq.add((h.get("__connect.errors.topic"), int(h.get("__connect.errors.partition", -1)),
                 int(h.get("__connect.errors.offset", -1))))
    want_dlq = set(load.poison)
    counts["dlq_records"] = len(dlq)
    if dlq != want_dlq:
        violations.append(f"DLQ: {len(dlq)} distinct records, {len(want_dlq)} poison injected; "
                          f"missing {sorted(want_dlq - dlq)[:3]}, unexpected {sorted(dlq - want_dlq)[:3]}")
    if load.error:
        violations.append(f"the load generator stopped early: {load.error}")
    if load.failed:
        violations.append(f"{len(load.failed)} deliveries failed: {load.failed[:3]}")
    return counts


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED") or random.randrange(1, 10**6)))
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("CHAOS_MINUTES") or 10))
    ap.add_argument("--report", help="also write the report as JSON to this file")
    a = ap.parse_args()
    run = f"chaos{a.seed}x{os.getpid()}"
    env = dict(os.environ)
    env.update({"NOVYRA_TOPIC_PREFIX": f"{run}.", "NOVYRA_DB_SCHEMA": run,
                "NOVYRA_METRICS_ADDR": "127.0.0.1:0", "RUST_LOG": env.get("CHAOS_RUST_LOG", "info,rdkafka=warn"),
                "RUST_BACKTRACE": "0"})
    log(f"seed {a.seed}, {a.minutes} minutes, run {run} (reproduce: CHAOS_SEED={a.seed} make chaos)")
    for cmd in (["db", "migrate"], ["topics"], ["schemas"]):
        subprocess.run([str(NOVYRA), *cmd], env=env, check=True, stdout=subprocess.DEVNULL)

    workers = Workers(env, run)
    for name, w in [("ingest-1", "ingest"), ("ingest-2", "ingest"), ("catalog-1", "catalog"), ("graph-1", "graph")]:
        workers.start(name, w)
    load = Load(run, a.seed, env["SCHEMA_REGISTRY_URL"], env["KAFKA_BROKERS"])
    load.start_catalogue()
    load.start()
    nemesis = Nemesis(a.seed, a.minutes, workers, env, run)
    started = time.time()
    violations = []
    try:
        nemesis.loop(started + a.minutes * 60)
        log("faults over; healing and draining")
        # Whatever a fault left down comes back (idempotent).
        subprocess.run(["bash", str(ROOT / "deploy" / "stack.sh"), "up"], check=True,
                       stdout=subprocess.DEVNULL)
        load.finish()
        workers.check()
        workers.restart_dead()
        if not wait_drained(env, env["DATABASE_URL"], run, timeout=600):
            violations.append("the pipeline did not drain within 10 minutes of the last fault")
        workers.check()
        violations += nemesis.violations + workers.violations
        counts = check(load, run, env, violations)
    finally:
        workers.stop_all()
    counts.update(load.counts)
    kinds = {}
    for f in nemesis.schedule:
        kinds[f["fault"]] = kinds.get(f["fault"], 0) + 1
    report = {"seed": a.seed, "minutes": a.minutes, "run": run, "schedule": nemesis.schedule,
              "faults_by_kind": kinds, "counts": counts, "violations": violations,
              "seconds": round(time.time() - started, 1)}
    print(json.dumps({k: report[k] for k in ("seed", "faults_by_kind", "counts")}, indent=1))
    for f in nemesis.schedule:
        print(f"  t={f['t']:>7}s  {f['fault']:<14} {f['seconds']:>6}s  {f['detail']}")
    for v in violations:
        print(f"VIOLATION: {v}")
    print(f"chaos: {len(violations)} violations (seed {a.seed})")
    if a.report:
        Path(a.report).write_text(json.dumps(report, indent=1))
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
