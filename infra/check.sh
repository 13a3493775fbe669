#!/usr/bin/env bash
# Static checks of infra/: nothing is started. Optional tools are used when present, skipped (and said so)
# when not:
#   python3 + PyYAML                      every YAML file parses
#   check-jsonschema                      compose.yaml against the Compose Specification schema (vendored)
#   docker compose                        `docker compose config` resolves compose.yaml with .env.example
#   kubectl (kustomize built in)          `kubectl kustomize infra/k8s` builds
#   kubernetes-validate                   the built manifests against the Kubernetes OpenAPI schemas (--strict)
# Always: the ConfigMap copy of the init script equals infra/postgres/init.sql, and .env.example defines every
# variable compose.yaml requires.
#   pip install check-jsonschema kubernetes-validate   # optional extras
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok    $*"; }
skip() { echo "skip  $*"; }
bad() { echo "FAIL  $*"; fail=1; }

for f in compose.yaml dask/distributed.yaml k8s/*.yaml helm/*.yaml; do
  [ -e "$f" ] || continue
  if "$PYTHON" -c 'import sys, yaml; list(yaml.safe_load_all(open(sys.argv[1])))' "$f"; then ok "yaml parses: $f"; else bad "yaml: $f"; fi
done

# The init script and its ConfigMap copy.
if "$PYTHON" - <<'PY'
import yaml
docs = list(yaml.safe_load_all(open("k8s/postgres.yaml")))
cm = next(d for d in docs if d["kind"] == "ConfigMap")
raise SystemExit(cm["data"]["10-init.sql"] != open("postgres/init.sql").read())
PY
then ok "k8s/postgres.yaml ConfigMap == postgres/init.sql"; else bad "k8s/postgres.yaml ConfigMap differs from postgres/init.sql"; fi

# Every ${VAR:?...} of compose.yaml is defined in .env.example.
missing=$(grep -o '\${[A-Z_]*:?' compose.yaml | sed 's/^\${//; s/:?$//' | sort -u | while read -r v; do
  grep -q "^$v=" .env.example || echo "$v"; done)
if [ -z "$missing" ]; then ok ".env.example defines every required variable"; else bad ".env.example lacks: $missing"; fi

if command -v check-jsonschema >/dev/null; then
  if check-jsonschema --builtin-schema vendor.compose-spec compose.yaml; then ok "compose-spec schema"; else bad "compose-spec schema"; fi
else skip "compose-spec schema (no check-jsonschema)"; fi

if docker compose version >/dev/null 2>&1; then
  if docker compose -f compose.yaml --env-file .env.example config --quiet; then ok "docker compose config"; else bad "docker compose config"; fi
else skip "docker compose config (no compose plugin)"; fi

if command -v kubectl >/dev/null; then
  cp -r k8s "$tmp/k8s"
  [ -e "$tmp/k8s/secret.yaml" ] || cp k8s/secret.example.yaml "$tmp/k8s/secret.yaml"
  if kubectl kustomize "$tmp/k8s" > "$tmp/rendered.yaml"; then
    ok "kubectl kustomize k8s ($(grep -c '^kind:' "$tmp/rendered.yaml") objects)"
    if command -v kubernetes-validate >/dev/null; then
      if kubernetes-validate --strict --quiet "$tmp/rendered.yaml"; then ok "kubernetes-validate --strict"; else bad "kubernetes-validate"; fi
    else skip "kubernetes-validate (not installed)"; fi
  else bad "kubectl kustomize"; fi
else skip "kubectl kustomize (no kubectl)"; fi

[ "$fail" = 0 ] && echo "all checks passed" || { echo "some checks failed"; exit 1; }
