#!/usr/bin/env bash
# Run transformers' own common test mixins (ModelTesterMixin, ConfigTester) against GLIP.
#
# Downloads the source distribution of the INSTALLED transformers version (its tests/ folder holds the mixins; the
# wheel does not), unpacks it into a cache folder, installs the mixins' test-only dependency `parameterized` next to
# it (not into the environment), and runs pytest on tests/transformers_common with TRANSFORMERS_TESTS_SOURCE set.
#
# Usage: tools/run_transformers_common_tests.sh [pytest arguments...]
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
dependencies="$cache/test-dependencies"

mkdir -p "$cache"
if [[ ! -f "$source_dir/tests/test_modeling_common.py" ]]; then
    if [[ ! -f "$archive" ]]; then
        echo "Downloading the transformers==$version source distribution into $cache" >&2
        "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --dest "$cache" "transformers==$version"
    fi
    tar -xzf "$archive" -C "$cache" "transformers-$version/PKG-INFO" "transformers-$version/tests"
fi
# The sdist omits tests/__init__.py, which its ConfigTester imports (`direct_transformers_import`).
touch "$source_dir/tests/__init__.py"
if ! PYTHONPATH="$dependencies" "$PYTHON" -c 'import parameterized' 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --target "$dependencies" 'parameterized>=0.9'
fi

export TRANSFORMERS_TESTS_SOURCE="$source_dir"
export PYTHONPATH="$repository/src:$dependencies${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m pytest -p no:cacheprovider -rs tests/transformers_common "$@"
