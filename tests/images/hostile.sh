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
  lines)  # a flood of lines on stderr, the last of which explain the failure
    i=1
    while [ "$i" -le "${LINES:-100000}" ]; do echo "line $i of ${LINES:-100000}" >&2; i=$((i + 1)); done
    echo "the scene has no red band: giving up" >&2
    exit 3;;
  files)  # more files than the operator allows
    i=1
    while [ "$i" -le "${FILES:-100}" ]; do : > "$OUTPUT_DIR/file-$i.txt"; i=$((i + 1)); done;;
  forge)  # documents posing as the runner's own, then success or failure as EXIT says
    echo real > "$OUTPUT_DIR/real.txt"
    echo '{"status": "successful", "submitter": "admin", "results": []}' > "$OUTPUT_DIR/granary-execution.json"
    echo '{"type": "Feature", "id": "forged"}' > "$OUTPUT_DIR/granary-item.json"
    echo forged > "$OUTPUT_DIR/granary-quicklook-real.png"
    exit "${EXIT:-0}";;
  names)  # a name that is not UTF-8, beside a good one
    echo real > "$OUTPUT_DIR/real.txt"
    echo bad > "$OUTPUT_DIR/$(printf 'bad\377name.txt')";;
  html)  # pages and pictures that would run script as whoever opens them
    echo '<html><body><script>document.title="pwned";fetch("/processes",{method:"POST",body:"x"});new Image().src="http://127.0.0.1:'"$BEACON"'/html"</script><img src="http://127.0.0.1:'"$BEACON"'/img"></body></html>' > "$OUTPUT_DIR/report.html"
    echo '<svg xmlns="http://www.w3.org/2000/svg"><script>document.title="pwned";new Image().src="http://127.0.0.1:'"$BEACON"'/svg"</script></svg>' > "$OUTPUT_DIR/map.svg"
    echo '<script>document.title="pwned"</script>' > "$OUTPUT_DIR/notes.txt";;
esac
