#!/usr/bin/env bash
# Builds the abi3 wheel and tests the *installed* package in a fresh venv, away from the source
# tree and with no Rust toolchain on PATH (README, "Wheels").
#
#   tools/check_wheel.sh                      smoke test: a venv of its own, the wheel and its
#                                             dependencies from PyPI, import + a palettization
#   tools/check_wheel.sh --suite [FILES...]   the test suite (or FILES) against the installed
#                                             wheel; test dependencies come from the system's
#                                             site-packages (pip install ".[test]" torch first)
#   --features portable                       build the wheel with the portable code paths
#   --with PKG==VERSION                       (with --suite) install PKG==VERSION into the venv
#                                             over the system's, e.g. --with coremltools==8.3
#
# CARGO_TARGET_DIR is honoured, so a wheel built after `pip install .` with the same target
# directory only repackages.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
suite=0
features=()
extra=()
tests=()
while (($#)); do
    case "$1" in
        --suite) suite=1 ;;
        --features) features=(--features "python,$2"); shift ;;  # pyproject.toml's features are replaced, not added to
        --with) extra+=("$2"); shift ;;
        *) tests+=("$1") ;;
    esac
    shift
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$repo" && maturin build --release --quiet "${features[@]}" --out "$work/dist")
wheel="$(ls "$work"/dist/*.whl)"
echo "wheel: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"

# No cargo or rustc from here on: what is tested must come from the wheel.
clean_path="$(tr ':' '\n' <<<"$PATH" | grep -v -e cargo -e rustup | paste -sd: -)"
if ((suite)); then
    python3 -m venv --system-site-packages "$work/venv"
    PATH="$clean_path" "$work/venv/bin/pip" install --quiet --no-deps --force-reinstall "$wheel"
    if ((${#extra[@]})); then
        PATH="$clean_path" "$work/venv/bin/pip" install --quiet "${extra[@]}"
    fi
else
    python3 -m venv "$work/venv"
    PATH="$clean_path" "$work/venv/bin/pip" install --quiet "$wheel"
fi
py="$work/venv/bin/python"
cd "$work"
PATH="$clean_path" "$py" - "$work/venv" <<'PY'
import sys
from pathlib import Path

import coreml_compress
from coreml_compress import _native

venv = Path(sys.argv[1]).resolve()
where = Path(_native.__file__).resolve()
assert venv in where.parents, f"imported {where}, not the wheel installed in {venv}"
print("installed:", where.relative_to(venv), _native.build_info())
PY
if ((suite)); then
    paths=()
    for t in "${tests[@]}"; do paths+=("$repo/$t"); done
    ((${#paths[@]})) || paths=("$repo/tests")
    PATH="$clean_path" "$py" -m pytest -q -p no:cacheprovider --rootdir "$repo" "${paths[@]}"
else
    PATH="$clean_path" "$work/venv/bin/coreml-compress" demo --out "$work/demo"
fi
