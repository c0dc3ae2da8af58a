#!/bin/sh
# A container that says its secret setting everywhere a person could read it: a progress message, a log line, the
# failure message of results.json, its plugin_results value.
echo "{\"progress\": 50, \"message\": \"using $API_TOKEN\"}"
echo "token is $API_TOKEN"
case "$WHERE" in
  message) echo "{\"message\": \"refused by $API_TOKEN\"}" > "$OUTPUT_DIR/results.json";;
  plugin) echo "{\"plugin_results\": {\"token\": \"$API_TOKEN\"}}";;
esac
