"""Publish attempts with Confluent's own Python client and AvroSerializer.

Proves that events from another Confluent-compatible producer (same .avsc,
same registry, TopicNameStrategy) are ingested like novyra's own. Used by
crates/pipeline/tests/interop.rs; prints one JSON line with what it sent.

usage: produce_confluent.py TOPIC_PREFIX USER_PREFIX COUNT
env:   KAFKA_BROKERS, SCHEMA_REGISTRY_URL, and the same optional security
       variables novyra reads: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM,
       KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SSL_CA_LOCATION,
       SCHEMA_REGISTRY_USER, SCHEMA_REGISTRY_PASSWORD, SCHEMA_REGISTRY_CA_FILE
"""
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


# novyra's environment variable -> librdkafka property (as in the
# pipeline's KAFKA_SECURITY_ENV), so both clients are configured alike.
KAFKA_SECURITY_ENV = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
}


def kafka_conf() -> dict:
    conf = {"bootstrap.servers": os.environ["KAFKA_BROKERS"], "enable.idempotence": True}
    for var, prop in KAFKA_SECURITY_ENV.items():
        if os.environ.get(var):
            conf[prop] = os.environ[var]
    return conf


def registry_conf() -> dict:
    conf = {"url": os.environ["SCHEMA_REGISTRY_URL"]}
    if os.environ.get("SCHEMA_REGISTRY_USER"):
        password = os.environ.get("SCHEMA_REGISTRY_PASSWORD", "")
        conf["basic.auth.user.info"] = f"{os.environ['SCHEMA_REGISTRY_USER']}:{password}"
    if os.environ.get("SCHEMA_REGISTRY_CA_FILE"):
        conf["ssl.ca.location"] = os.environ["SCHEMA_REGISTRY_CA_FILE"]
    return conf


def main() -> None:
    prefix, user_prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    topic = f"{prefix}attempts"
    schema = (Path(__file__).resolve().parents[2] / "schemas" / "ConceptAttempted.avsc").read_text()
    registry = SchemaRegistryClient(registry_conf())
    serializer = AvroSerializer(registry, schema, conf={"auto.register.schemas": True})
    producer = Producer(kafka_conf())
    rng = random.Random(11)
    now = int(time.time() * 1000) - 3_600_000
    sent = []
    for i in range(count):
        user = f"{user_prefix}u{i % 5}"
        event = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "user_id": user,
            "concept_id": f"{user_prefix}c{i % 3}",
            "occurred_at": now + i * 1000,
            "correct": rng.random() < 0.7,
            "hints_used": 1 if rng.random() < 0.2 else 0,
            "duration_ms": rng.randint(1000, 60000),
            "rubric": None if i % 4 else {
                "rubric_id": "py-rubric",
                "weighted_total": 0.5,
                "criteria": [{"name": "clarity", "score": 0.5, "weight": 1.0}],
            },
        }
        value = serializer(event, SerializationContext(topic, MessageField.VALUE))
        producer.produce(topic, key=user.encode(), value=value)
        sent.append(event["event_id"])
    if producer.flush(60) != 0:
        raise SystemExit("not every record was delivered")
    print(json.dumps({"topic": topic, "count": len(sent), "schema_id": int.from_bytes(value[1:5], "big")}))


if __name__ == "__main__":
    main()
