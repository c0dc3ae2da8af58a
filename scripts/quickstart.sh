#!/usr/bin/env bash
# Sets everything up, starts the embedded default (a local Prefect server with SQLite on 127.0.0.1:4200, local
# Docker, results in ~/.granary/results), serves the registered tasks, and runs the ndvi example end to end.
# The server and `granary serve` keep running afterwards so that the results can be seen in the UI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CACHE="${GRANARY_CACHE:-$HOME/.cache/granary-flows}"
LOGS="$HOME/.granary/logs"
mkdir -p "$LOGS"
export PREFECT_API_URL="http://127.0.0.1:4200/api" PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
source .venv/bin/activate

if ! curl -sf "$PREFECT_API_URL/health" >/dev/null; then
  echo "==> starting the Prefect server (log: $LOGS/prefect-server.log)"
  nohup prefect server start --host 127.0.0.1 --port 4200 >"$LOGS/prefect-server.log" 2>&1 &
  for _ in $(seq 120); do curl -sf "$PREFECT_API_URL/health" >/dev/null && break; sleep 0.5; done
fi
if ! pgrep -f "granary serve" >/dev/null; then
  echo "==> starting granary serve (log: $LOGS/serve.log)"
  # The runner reads file:// inputs only from folders the operator allows: here, the sample's.
  GRANARY_ALLOW_FILE_ROOTS="$CACHE/sample" nohup granary serve >"$LOGS/serve.log" 2>&1 &
  for _ in $(seq 60); do grep -q "waiting for runs" "$LOGS/serve.log" 2>/dev/null && break; sleep 0.5; done
fi

granary run ndvi -p redBand=3 -p nirBand=4 -p tiffLocation="file://$CACHE/sample/scene.tif" --watch
cat <<DONE

The Prefect UI is at http://127.0.0.1:4200 (Deployments > ndvi > Run shows the task's form).
Stop everything with: pkill -f "granary serve"; pkill -f "prefect server start"
DONE
