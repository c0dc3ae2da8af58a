#!/usr/bin/env bash
# Sets everything up, starts the embedded default (a local Prefect server with SQLite on 127.0.0.1:4200, local
# Docker, results in ~/.granary/results), serves the registered tasks, starts the HTTP API on 127.0.0.1:5050 with a
# local admin token, and runs the ndvi example end to end, from the CLI and then over HTTP.
# Everything keeps running afterwards so that the results can be seen in the UI and the API.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CACHE="${GRANARY_CACHE:-$HOME/.cache/granary-flows}"
LOGS="$HOME/.granary/logs"
mkdir -p "$LOGS"
export PREFECT_API_URL="http://127.0.0.1:4200/api" PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
export GRANARY_API_URL="http://127.0.0.1:5050"  # where the runner points quicklook links and Granary's webhook
# The runner reads file:// inputs only from folders the operator allows: here, the sample's.
export GRANARY_ALLOW_FILE_ROOTS="$CACHE/sample"
source .venv/bin/activate

# The API's one identity here: an admin token, kept in ~/.granary/api-token; the tokens file holds its digest only.
TOKEN_FILE="$HOME/.granary/api-token"
if [ ! -s "$TOKEN_FILE" ]; then
  (umask 077 && python3 -c "import secrets; print(secrets.token_urlsafe(32))" >"$TOKEN_FILE")
fi
TOKEN="$(cat "$TOKEN_FILE")"
DIGEST="$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
printf -- '- {token: "sha256:%s", subject: admin, roles: [admin]}\n' "$DIGEST" >"$HOME/.granary/api-tokens.yaml"

if ! curl -sf "$PREFECT_API_URL/health" >/dev/null; then
  # granary server start keeps the server's log itself, rotated: ~/.granary/logs/prefect-server-4200.log
  echo "==> starting the Prefect server (log: $LOGS/prefect-server-4200.log)"
  nohup granary server start --host 127.0.0.1 --port 4200 >/dev/null 2>&1 &
  for _ in $(seq 120); do curl -sf "$PREFECT_API_URL/health" >/dev/null && break; sleep 0.5; done
fi
if ! pgrep -f "granary serve" >/dev/null; then
  echo "==> starting granary serve (log: $LOGS/serve.log)"
  nohup granary serve >"$LOGS/serve.log" 2>&1 &
  for _ in $(seq 60); do grep -q "waiting for runs" "$LOGS/serve.log" 2>/dev/null && break; sleep 0.5; done
fi
if ! curl -sf "$GRANARY_API_URL/conformance" >/dev/null; then
  echo "==> starting granary api (log: $LOGS/api.log)"
  GRANARY_API_AUTH=tokens GRANARY_API_TOKENS_FILE="$HOME/.granary/api-tokens.yaml" \
    nohup granary api --port 5050 >"$LOGS/api.log" 2>&1 &
  for _ in $(seq 60); do curl -sf "$GRANARY_API_URL/conformance" >/dev/null && break; sleep 0.5; done
fi

granary run ndvi -p redBand=3 -p nirBand=4 -p tiffLocation="file://$CACHE/sample/scene.tif" --watch

echo "==> the same over HTTP (OGC API - Processes), synchronously:"
echo "\$ curl -H 'Authorization: Bearer ...' $GRANARY_API_URL/processes/ndvi/execution -H 'Content-Type: application/json' -d '{\"inputs\": {...}}'"
curl -sf -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" "$GRANARY_API_URL/processes/ndvi/execution" \
  -d "{\"inputs\": {\"redBand\": 3, \"nirBand\": 4, \"tiffLocation\": \"file://$CACHE/sample/scene.tif\"}}" \
  | python3 -m json.tool
CREDENTIAL="$(granary server credentials)"
cat <<DONE

The Prefect UI is at http://127.0.0.1:4200 (Deployments > ndvi > Run shows the task's form). Its server, like
everything granary starts, requires a credential: sign in with
  $CREDENTIAL
(\`granary server credentials\` prints it; granary's commands on this machine find it by themselves).
The HTTP API is at $GRANARY_API_URL (OpenAPI: $GRANARY_API_URL/openapi.json); its admin token is in $TOKEN_FILE:
  curl -H "Authorization: Bearer \$(cat $TOKEN_FILE)" $GRANARY_API_URL/jobs
  in a browser: $GRANARY_API_URL/login, paste the token, then $GRANARY_API_URL/processes/ndvi?f=html
Stop everything with: pkill -f "granary api"; pkill -f "granary serve"; pkill -f "prefect server start"
DONE
