#!/bin/sh
# A Scale job as Scale runs them: it reads the context of its inputs from $INPUT_METADATA, and describes its product
# with a side-car in Scale's words (dataStarted, dataEnded, dataTypes). It knows nothing of granary.
set -e
cat "$INPUT_METADATA" > "$OUTPUT_DIR/input-metadata.json"
echo "product of $INPUT_FILE" > "$OUTPUT_DIR/product.txt"
cat > "$OUTPUT_DIR/product.txt.metadata.json" <<JSON
{"type": "Feature", "geometry": {"type": "Point", "coordinates": [12.5, 41.9]},
 "properties": {"dataStarted": "2018-06-01T00:00:00Z", "dataEnded": "2018-06-01T01:00:00Z", "dataTypes": ["scale", "test"]}}
JSON
