"""Validates deploy/k8s/*.yaml offline (there is no cluster here):

- core kinds against the Kubernetes OpenAPI schemas bundled with
  kubernetes-validate, strictly (unknown fields fail);
- KEDA ScaledObjects against the openAPIV3Schema of KEDA's own CRD
  (argv[1]: keda.sh_scaledobjects.yaml);
- cross-references: every ScaledObject targets a Deployment defined here,
  names a consumer group the workers use, and scales no further than the
  topic's partitions; every envFrom/configMap reference exists.

Usage: validate.py CRD_YAML K8S_VERSION FILE...
"""
import sys

import jsonschema
import kubernetes_validate
import yaml

PARTITIONS = {"novyra.attempts": 12, "novyra.concepts": 3, "novyra.prerequisites": 3, "novyra.mastery": 12, "novyra.evaluations": 6}


def main():
    crd_path, version, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    crd = yaml.safe_load(open(crd_path))
    so_schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")["schema"]["openAPIV3Schema"]
    docs = []
    for f in files:
        for d in yaml.safe_load_all(open(f)):
            if d:
                docs.append((f, d))
    errors = []
    by_kind = {}
    for f, d in docs:
        kind = d.get("kind")
        name = d.get("metadata", {}).get("name")
        by_kind.setdefault(kind, {})[name] = d
        try:
            if kind == "ScaledObject":
                jsonschema.validate(d, so_schema)
            else:
                kubernetes_validate.validate(d, version, strict=True)
        except Exception as e:  # both libraries raise their own ValidationError
            errors.append(f"{f}: {kind}/{name}: {getattr(e, 'message', e)}")
    deployments = by_kind.get("Deployment", {})
    for name, so in by_kind.get("ScaledObject", {}).items():
        target = so["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            errors.append(f"ScaledObject/{name}: target {target} is not a Deployment here")
            continue
        args = deployments[target]["spec"]["template"]["spec"]["containers"][0].get("args", [])
        for t in so["spec"]["triggers"]:
            m = t["metadata"]
            if m.get("consumerGroup") != f"novyra-{args[0]}":
                errors.append(f"ScaledObject/{name}: group {m.get('consumerGroup')} is not novyra-{args[0]}")
        widest = max(PARTITIONS.get(t["metadata"].get("topic"), 0) for t in so["spec"]["triggers"])
        if so["spec"]["maxReplicaCount"] > widest:
            errors.append(f"ScaledObject/{name}: maxReplicaCount {so['spec']['maxReplicaCount']} > {widest} partitions")
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        for c in pod["containers"]:
            for ref in c.get("envFrom", []):
                s = ref.get("secretRef", {}).get("name")
                if s and s not in by_kind.get("Secret", {}):
                    errors.append(f"Deployment/{name}: Secret {s} not defined")
        for v in pod.get("volumes", []):
            cm = v.get("configMap", {}).get("name")
            if cm and cm not in by_kind.get("ConfigMap", {}):
                errors.append(f"Deployment/{name}: ConfigMap {cm} not defined")
    for e in errors:
        print(e, file=sys.stderr)
    print(f"{len(docs)} documents, {len(errors)} error(s)")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
