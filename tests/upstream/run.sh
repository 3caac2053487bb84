#!/usr/bin/env bash
# Run Starlette's and Flask's own test suites (sdists of the installed versions) twice: plain, and with
# the audit middleware injected into every app (tests/upstream/auditlog_inject.py). Fails when the
# injected run has a failure the plain run does not (and known-differences.txt does not explain), or when
# the plugin reports middleware errors or dropped events.
#
#   tests/upstream/run.sh                    # both suites
#   PYTHON=.venv/bin/python tests/upstream/run.sh starlette
#
# Needs network access to PyPI (pip download) the first time; sdists are cached in $UPSTREAM_CACHE
# (default: ~/.cache/auditlog-upstream). Takes about a minute.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
py="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$py" ] || py="$(command -v python3)"
cache="${UPSTREAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/auditlog-upstream}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$cache"
status=0

failures() {  # the node ids a pytest run reports as FAILED or ERROR (from -rfE), sorted
    sed -n -E 's/^(FAILED|ERROR) ([^ ]+).*/\2/p' "$1" | sort -u
}

for pkg in "${@:-starlette flask}"; do
  for name in $pkg; do
    version="$("$py" -c "import importlib.metadata as m; print(m.version('$name'))")"
    sdist="$(ls "$cache"/"$name"-"$version".tar.gz 2>/dev/null || true)"
    if [ -z "$sdist" ]; then
        "$py" -m pip download --no-binary :all: --no-deps "$name==$version" -d "$cache" -q
        sdist="$(ls "$cache"/"$name"-"$version".tar.gz)"
    fi
    tar xzf "$sdist" -C "$work"
    src="$work/$name-$version"
    echo "== $name $version"
    run() {  # $1: output file; the rest: extra pytest arguments
        local out="$1"; shift
        (cd "$src" && PYTHONPATH="$repo:$here" TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="" \
            "$py" -m pytest tests -q -p no:cacheprovider -p upstream_compat -rfE \
            --continue-on-collection-errors "$@" >"$out" 2>&1) || true
        tail -n 1 "$out"
    }
    run "$work/$name.plain"
    run "$work/$name.injected" -p auditlog_inject
    grep -h '^auditlog_inject:' "$work/$name.injected" || { echo "the plugin did not report"; status=1; }
    failures "$work/$name.plain" >"$work/$name.plain.ids"
    failures "$work/$name.injected" >"$work/$name.injected.ids"
    grep -v '^#' "$here/known-differences.txt" | sed 's/ #.*//' | sort -u >"$work/known.ids"
    new="$(comm -13 "$work/$name.plain.ids" "$work/$name.injected.ids" | comm -23 - "$work/known.ids")"
    if [ -n "$new" ]; then
        echo "failing only with the middleware injected:"
        echo "$new"
        grep -A40 -F "$(echo "$new" | head -n 1 | sed 's/.*:://')" "$work/$name.injected" | head -n 60 || true
        status=1
    fi
    if grep -q "^auditlog_inject:.*middleware errors: [^n]" "$work/$name.injected" \
        || ! grep -q "^auditlog_inject:.*, 0 dropped," "$work/$name.injected"; then
        status=1
    fi
  done
done
exit $status
