#!/usr/bin/env bash
# A new user's first hour, as CI checks it: a fresh clone of this repository, `make demo`, then the README's
# quickstart lines (the bash block between <!-- newcomer:begin --> and <!-- newcomer:end --> in README.md) run as
# written, one at a time, from the clone's root. Any line that fails fails the script, naming the line.
#   scripts/newcomer.sh [WORKDIR]   (default: a new temporary folder, removed at the end when all passed)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d -t coca-video-newcomer.XXXXXX)}"
clone="$work/coca-video"

lines="$(python3 "$repo/scripts/readme_block.py" "$repo/README.md" newcomer)"
[ -n "$lines" ] || { echo "newcomer: README.md has no newcomer block" >&2; exit 1; }

rm -rf "$clone"
git clone --quiet "$repo" "$clone"
cd "$clone"
echo "newcomer: make demo in a fresh clone ($clone)"
make demo
# the demo's install is the demo's: none of the test stack or the extras (make test adds those)
.venv/bin/python - <<'PY'
import importlib.util
import sys

extra = [m for m in ("pytest", "open_clip", "transformers", "ray", "moto", "selenium", "pycocoevalcap", "fastapi")
         if importlib.util.find_spec(m)]
sys.exit(f"newcomer: make demo installed what only make test needs: {', '.join(extra)}" if extra else 0)
PY
echo "newcomer: .venv after make demo: $(du -sh .venv | cut -f1)"
while IFS= read -r line; do
    echo "newcomer: \$ $line"
    bash -euo pipefail -c "$line" || { echo "newcomer: the README's line failed (exit $?): $line" >&2; exit 1; }
done <<< "$lines"
echo "newcomer: the README's $(wc -l <<< "$lines") quickstart lines ran as written after make demo"
[ -n "${1:-}" ] || rm -rf "$work"
