#!/usr/bin/env bash
# Run only transformers' own common test mixins (ModelTesterMixin, ConfigTester, ImageProcessingTestMixin,
# ProcessorTesterMixin) against GLIP: tests/transformers_common with the mixins of the installed transformers version
# (see tools/fetch_transformers_tests.sh). `make test` runs them as part of the whole suite.
#
# Usage: tools/run_transformers_common_tests.sh [pytest arguments...]
set -euo pipefail

repository="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repository"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
TRANSFORMERS_TESTS_SOURCE="$(PYTHON="$PYTHON" bash tools/fetch_transformers_tests.sh)"
export TRANSFORMERS_TESTS_SOURCE
exec "$PYTHON" -m pytest -p no:cacheprovider -rs tests/transformers_common "$@"
