#!/bin/sh
# Run the image build-rootfs.sh made as a real container and answer the demo CDS call.
#
#   sudo deploy/container/smoke.sh OUT [PORT]      # from a source checkout (.venv made)
#
# Imports OUT/tonle-rootfs.tar.gz into podman as localhost/tonle:rootfs (with the
# image's user, environment and entrypoint from OUT/image.changes), runs it with a
# read-only root file system as the service user (uid 1034), all capabilities dropped,
# /tmp and BentoML's Prometheus folder as tmpfs, the image's health check, the demo
# issuer's public keys mounted read-only, and the audit database in SQLite on a volume
# (or, with TONLE_DATABASE_URL set, that database, e.g. PostgreSQL on this host: the
# container then shares the host's network). Then, from the host, posts the demo
# patient's CDS Hooks request with curl, fetches the card's explanation page and reads
# the call's audit row. Prints what it found; exits non-zero if anything fails.
# PODMAN_RUNTIME=runc where crun refuses the host's cgroups ("hybrid mode").
# The ulimits are set no higher than a host without CAP_SYS_RESOURCE allows (podman's
# defaults would raise them).
# Not part of CI (needs root, podman, minutes).
set -eu

[ "$#" -ge 1 ] || { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
OUT=$(realpath "$1")
PORT=${2:-3300}
PY=${PYTHON:-.venv/bin/python}
IMAGE=localhost/tonle:rootfs
NAME=tonle-smoke-$$
URL=http://127.0.0.1:$PORT
SERVICE=/cds-services/ncd-cvd-risk
PODMAN="podman${PODMAN_RUNTIME:+ --runtime $PODMAN_RUNTIME}"

set --
while IFS= read -r change; do set -- "$@" --change "$change"; done < "$OUT/image.changes"
$PODMAN import -q "$@" "$OUT/tonle-rootfs.tar.gz" "$IMAGE" > /dev/null

# The demo issuer: its private keys stay on the host; the container gets the public ones.
rm -rf "$OUT/smoke" && mkdir -p "$OUT/smoke/issuer" "$OUT/smoke/data"
"$PY" - "$OUT/smoke" <<'PY'
import shutil, sys
from pathlib import Path
from serving.demo_issuer import ensure_demo_issuer
from training.demo import write_demo_request
smoke = Path(sys.argv[1])
issuers = ensure_demo_issuer(smoke / "keys", fhir_servers=[])
for name in (issuers.name, "jwks.json"):
    shutil.copyfile(issuers.parent / name, smoke / "issuer" / name)
write_demo_request(smoke / "demo-request.json")
PY
chown 1034:1034 "$OUT/smoke/data"
chmod -R a+rX "$OUT/smoke/issuer"

if [ -n "${TONLE_DATABASE_URL:-}" ]; then
    DATABASE=$TONLE_DATABASE_URL
    INSIDE_PORT=$PORT
    set -- --network host -e BENTOML_HOST=127.0.0.1 -e BENTOML_PORT="$PORT"
else
    DATABASE=sqlite:////data/audit.db
    INSIDE_PORT=3000
    set -- -p "127.0.0.1:$PORT:3000"
fi
LINK_KEY=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
$PODMAN run -d --name "$NAME" --read-only --cap-drop=ALL --security-opt=no-new-privileges \
    --tmpfs /tmp --tmpfs /home/bentoml/prometheus_multiproc_dir:U \
    --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
    --health-cmd "[\"/app/.venv/bin/python\", \"-c\", \"import urllib.request as u; u.urlopen('http://127.0.0.1:$INSIDE_PORT/livez', timeout=4)\"]" \
    -v "$OUT/smoke/issuer:/etc/tonle/issuer:ro" -v "$OUT/smoke/data:/data" \
    -e TONLE_DATABASE_URL="$DATABASE" \
    -e TONLE_ALLOWED_ISSUERS=/etc/tonle/issuer/allowed-issuers.yaml \
    -e TONLE_LINK_SECRET="$LINK_KEY" -e TONLE_PUBLIC_URL="$URL" \
    "$@" "$IMAGE" > /dev/null
trap '$PODMAN logs "$NAME" > "$OUT/smoke/container.log" 2>&1; $PODMAN rm -f "$NAME" > /dev/null' EXIT

i=0
until curl -fs "$URL/readyz" > /dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 180 ] || [ "$($PODMAN inspect -f '{{.State.Running}}' "$NAME")" != true ]; then
        $PODMAN logs "$NAME" 2>&1 | tail -30 >&2
        echo "smoke: the container did not become ready" >&2
        exit 1
    fi
    sleep 1
done
echo "ready after ~${i}s: $($PODMAN inspect -f 'user={{.Config.User}} read-only={{.HostConfig.ReadonlyRootfs}}' "$NAME")"

TOKEN=$("$PY" -c 'import sys; from pathlib import Path; from serving.demo_issuer import sign_token
print(sign_token(sys.argv[1], directory=Path(sys.argv[2])))' "$URL$SERVICE" "$OUT/smoke/keys")
curl -fsS -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
    -D "$OUT/smoke/headers.txt" --data "@$OUT/smoke/demo-request.json" "$URL$SERVICE" \
    > "$OUT/smoke/response.json"
REQUEST_ID=$(sed -n 's/^x-request-id: *//Ip' "$OUT/smoke/headers.txt" | tr -d '\r')
"$PY" - "$OUT/smoke/response.json" "$REQUEST_ID" "$DATABASE" "$OUT/smoke/data" <<'PY'
import json, sys, urllib.request
from serving.audit import AuditStore
response, request_id, database, data = sys.argv[1:]
card = json.load(open(response))["cards"][0]
print("card:", card["summary"])
with urllib.request.urlopen(card["links"][0]["url"], timeout=30) as page:
    print("explanation page:", page.status, len(page.read()), "bytes")
store = AuditStore.open(database.replace("sqlite:////data", f"sqlite:///{data}"), migrate=False)
try:
    rows = [(r.outcome, r.model_name, r.card_ids) for r in store.rows(request_id=request_id)]
finally:
    store.close()
print("audit row:", rows)
assert rows == [("advice", "cvd-risk", [card["uuid"]])], rows
PY
$PODMAN healthcheck run "$NAME" && echo "health check: healthy"
echo "processes in the container (uid, command):"
$PODMAN top "$NAME" user comm | sed 's/^/  /'
