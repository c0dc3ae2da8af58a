"""A process-api-style plugin, as process-api's examples are written: the inputs arrive as JSON in the last command
argument, and the results leave as the last stdout line, `{"plugin_results": ...}`. It knows nothing of granary."""

import json
import sys

params = json.loads(sys.argv[-1])
print(f"echoing {len(params)} input(s)", flush=True)
print(json.dumps({"plugin_results": {"message": params["text"]}}))
