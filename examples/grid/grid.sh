#!/bin/sh
# A GRiD-style algorithm, as GRiD packages them: its ENTRYPOINT reads the JSON arguments on standard input and
# writes everything it produces to /grid. It knows nothing of granary.
set -e
arguments=$(cat)
echo "read $(printf '%s' "$arguments" | wc -c) bytes of arguments"
printf '{"arguments": %s, "by": "grid-echo"}\n' "$arguments" > /grid/out.json
echo "wrote /grid/out.json"
