#!/usr/bin/env bash
# Refreshes the two sets of exact versions every install resolves (scripts/setup.sh, CI):
#   constraints.txt         the floor: the oldest Prefect (and integrations) pyproject.toml admits; the whole suite
#   constraints-newest.txt  the newest releases pyproject.toml admits; the quick layer (pytest -m "unit or quick")
# Run the tests on both before committing the result: a dependency bump is a change like any other.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOR="prefect==3.8.8 prefect-docker==0.7.4 prefect-aws==0.7.12"

lock() {  # lock FILE HEADER [PIN...]
  local file=$1 header=$2; shift 2
  local venv; venv=$(mktemp -d)
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e ".[test,dev,scale]" "$@"
  {
    printf '%s\n' "$header"
    "$venv/bin/pip" freeze --exclude-editable | grep -v -i '^granary-flows'
  } > "$file"
  rm -rf "$venv"
  echo "wrote $file ($(grep -vc '^#' "$file") packages; $(grep -i '^prefect==' "$file"))"
}

# shellcheck disable=SC2086  # the pins are separate words
lock constraints.txt "# The floor: exact versions of everything granary-flows installs with the oldest Prefect it admits, tested together
# (the whole suite). Refresh: bash scripts/lock.sh" $FLOOR
lock constraints-newest.txt "# The newest: exact versions of everything granary-flows installs with the newest Prefect it admits, tested
# together (pytest -m \"unit or quick\"). Refresh: bash scripts/lock.sh"
