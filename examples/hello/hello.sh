#!/bin/sh
# The hello task: greets, reports progress, and writes one output file.
# Arguments arrive as environment variables (Seed naming): NAME, TIMES, SLEEP.
set -e
times="${TIMES:-1}"
i=1
while [ "$i" -le "$times" ]; do
  echo "Hello, ${NAME:-world}! ($i/$times)"
  echo "{\"progress\": $((i * 100 / times)), \"message\": \"greeted $i of $times\"}"
  i=$((i + 1))
done
[ -z "$SLEEP" ] || sleep "$SLEEP"
echo "Hello, ${NAME:-world}!" > "$OUTPUT_DIR/greeting.txt"
