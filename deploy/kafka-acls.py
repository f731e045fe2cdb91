"""Applies the pipeline's Kafka ACLs and SCRAM users with Kafka's admin API.

    novyra acls --json | python deploy/kafka-acls.py --bootstrap HOST:PORT \
        [--admin-config FILE] [--passwords-from-env | --dev-passwords]

Reads the ACLs (JSON lines from `novyra acls --json`, derived from the
topic table) on stdin and creates them; existing ones are left alone
(creating an ACL twice is a no-op in Kafka). With --passwords-from-env,
each principal `novyra-ingest` gets SCRAM-SHA-512 and -256 credentials
from NOVYRA_SCRAM_NOVYRA_INGEST (principals without a variable are
skipped); --dev-passwords uses `<name>-dev-password`, for the local stack
only. The admin connection's own settings (SASL for a managed cluster)
come from --admin-config, a file of librdkafka `key=value` lines.
"""

import argparse
import json
import os
import sys

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)


def admin(bootstrap, config_file):
    conf = {"bootstrap.servers": bootstrap}
    if config_file:
        for line in open(config_file):
            line = line.strip()
            if line and not line.startswith("#"):
                k, v = line.split("=", 1)
                conf[k.strip()] = v.strip()
    return AdminClient(conf)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--admin-config")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--passwords-from-env", action="store_true")
    g.add_argument("--dev-passwords", action="store_true")
    a = p.parse_args()
    acls = [json.loads(l) for l in sys.stdin if l.strip()]
    client = admin(a.bootstrap, a.admin_config)

    users = sorted({x["principal"].split(":", 1)[1] for x in acls})
    upserts = []
    for u in users:
        if a.dev_passwords:
            pw = f"{u}-dev-password"
        elif a.passwords_from_env:
            pw = os.environ.get("NOVYRA_SCRAM_" + u.upper().replace("-", "_").replace(".", "_"))
            if not pw:
                continue
        else:
            continue
        for m in (ScramMechanism.SCRAM_SHA_512, ScramMechanism.SCRAM_SHA_256):
            upserts.append(UserScramCredentialUpsertion(u, ScramCredentialInfo(m, 8192), pw.encode()))
    # A request may alter each user once: one request per mechanism.
    for m in (ScramMechanism.SCRAM_SHA_512, ScramMechanism.SCRAM_SHA_256):
        batch = [u for u in upserts if u.scram_credential_info.mechanism == m]
        for _, f in (client.alter_user_scram_credentials(batch).items() if batch else []):
            f.result()
    bindings = [
        AclBinding(
            ResourceType[x["resource_type"]],
            x["resource_name"],
            ResourcePatternType[x["pattern_type"]],
            x["principal"],
            "*",
            AclOperation[x["operation"]],
            AclPermissionType.ALLOW,
        )
        for x in acls
    ]
    for _, f in client.create_acls(bindings).items():
        f.result()
    print(f"applied {len(bindings)} ACLs, {len(upserts) // 2} SCRAM users", file=sys.stderr)


if __name__ == "__main__":
    main()
