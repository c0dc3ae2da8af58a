#!/usr/bin/env bash
# Refreshes constraints.txt, the versions every install resolves (scripts/setup.sh, CI): a fresh venv takes the newest
# releases pyproject.toml allows, and their exact versions are written down. Run the tests before committing the
# result: a dependency bump is a change like any other.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e ".[test]"
{
  echo "# Exact versions of everything granary-flows installs, tested together. Refresh: bash scripts/lock.sh"
  "$venv/bin/pip" freeze --exclude-editable | grep -v -i '^granary-flows'
} > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
