#!/bin/sh
# random.sh COUNT [-s SEED] OUTPUT_DIR: COUNT pseudo-random numbers (a linear congruential generator, so that a
# SEED reproduces them) in OUTPUT_DIR/numbers.txt, their sum in OUTPUT_DIR/seed.outputs.json.
count="$1"; shift
seed=1
if [ "$1" = "-s" ]; then seed="$2"; shift 2; fi
out="$1"
[ "$count" -gt 0 ] 2>/dev/null || { echo "COUNT must be positive, got '$count'" >&2; exit 3; }
echo "allocated: cpus=$ALLOCATED_CPUS mem=$ALLOCATED_MEM sharedMem=$ALLOCATED_SHAREDMEM"
echo "label: ${LABEL:-none}; token: ${API_TOKEN:-none}"
[ -f /reference/notes.txt ] && echo "reference: $(cat /reference/notes.txt)"
[ -n "$WORD_LISTS" ] && echo "word lists: $(ls "$WORD_LISTS" | tr '\n' ' ')"
sum=0; i=0; state="$seed"
: > "$out/numbers.txt"
while [ "$i" -lt "$count" ]; do
  state=$(( (state * 1103515245 + 12345) % 2147483648 ))
  number=$(( state % 100 ))
  echo "$number" >> "$out/numbers.txt"
  sum=$(( sum + number )); i=$(( i + 1 ))
done
echo "{\"sum\": $sum}" > "$out/seed.outputs.json"
echo "wrote $count numbers, sum $sum"
