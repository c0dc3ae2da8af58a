#!/bin/sh
# A hostile container for the tests: it tries, through its outputs and its lines, to make the runner read or store
# what is not its own. HOW picks the attempt.
case "$HOW" in
  links)
    echo real > "$OUTPUT_DIR/real.txt"
    ln -s /etc/shadow "$OUTPUT_DIR/shadow.txt"
    ln -s /proc/self/environ "$OUTPUT_DIR/environ.txt"
    ln -s ../../../../../../etc/passwd "$OUTPUT_DIR/passwd.txt"
    mkdir "$OUTPUT_DIR/deep" && ln -s /etc "$OUTPUT_DIR/deep/etc"
    ln -s /etc/hostname "$OUTPUT_DIR/real.txt.metadata.json";;
  fifo)
    echo real > "$OUTPUT_DIR/real.txt"
    mkfifo "$OUTPUT_DIR/pipe";;
  huge)
    dd if=/dev/zero of="$OUTPUT_DIR/big.bin" bs=1048576 count="${SIZE_MIB:-8}" 2>/dev/null;;
  flood)
    head -c "${FLOOD_BYTES:-1048576}" /dev/zero
    echo
    echo "after the flood";;
  href)
    echo real > "$OUTPUT_DIR/real.txt"
    printf '{"results": [{"href": "real.txt"}, {"href": "%s", "title": "forged"}]}' "$HREF" > "$OUTPUT_DIR/results.json";;
  plugin-href)
    echo real > "$OUTPUT_DIR/real.txt"
    printf '{"plugin_results": [{"href": "%s", "title": "forged"}]}\n' "$HREF";;
esac
