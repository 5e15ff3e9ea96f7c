#!/usr/bin/env bash
# Print the folder of transformers' own test mixins (tests/test_modeling_common.py, ...) for the INSTALLED version.
#
# The wheel does not ship them, so the source distribution of that version is downloaded once with
# `pip download --no-deps --no-binary :all: transformers==<version>` into a cache folder and its tests/ unpacked. The
# folder goes into TRANSFORMERS_TESTS_SOURCE, which tests/transformers_common reads (they skip, saying why, when it is
# empty). Offline, a warning goes to stderr and nothing is printed.
#
# Usage: TRANSFORMERS_TESTS_SOURCE="$(tools/fetch_transformers_tests.sh)" python -m pytest tests
# Environment: PYTHON (default .venv/bin/python, else python3), TRANSFORMERS_SDIST_CACHE (default
# .venv/transformers-sdist under the repository root).
set -euo pipefail

repository="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repository"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
cache="${TRANSFORMERS_SDIST_CACHE:-$repository/.venv/transformers-sdist}"
version="$("$PYTHON" -c 'import transformers; print(transformers.__version__)')"
source_dir="$cache/transformers-$version"
archive="$cache/transformers-$version.tar.gz"

mkdir -p "$cache"
if [[ ! -f "$source_dir/tests/test_modeling_common.py" ]]; then
    if [[ ! -f "$archive" ]]; then
        echo "Downloading the transformers==$version source distribution (its test mixins) into $cache" >&2
        if ! "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --dest "$cache" "transformers==$version" >&2
        then
            echo "warning: could not download transformers==$version; its common test mixins will be skipped" >&2
            exit 0
        fi
    fi
    tar -xzf "$archive" -C "$cache" "transformers-$version/PKG-INFO" "transformers-$version/tests"
fi
# The sdist omits tests/__init__.py, which its ConfigTester imports (`direct_transformers_import`).
touch "$source_dir/tests/__init__.py"
echo "$source_dir"
