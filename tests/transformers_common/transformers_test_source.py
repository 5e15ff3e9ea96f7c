"""Import transformers' own common test mixins from its source distribution, without copying them.

The folder named by the environment variable `TRANSFORMERS_TESTS_SOURCE` must hold `tests/test_modeling_common.py`
(an unpacked `transformers-X.Y.Z.tar.gz` of the installed version; `tools/run_transformers_common_tests.sh` downloads
and unpacks it). When the variable is unset, the importing test module is skipped with the reason.

The sdist ships `tests/test_*_common.py` but not three helper modules they import; when (and only when) the source
folder lacks them, minimal stand-ins are registered, none of which adds or removes a test of the mixins used here:

* `tests.exporters.test_export.ExportTesterMixin` (base class of `ModelTesterMixin`: the torch.export / ONNX /
  ExecuTorch export tests) -> an empty mixin, so those export tests are not run;
* `tests.generation.test_utils.GenerationTesterMixin` -> an empty class (only read by an `issubclass` check that
  requires generative models to use it; GLIP cannot generate);
* `tests.utils.test_configuration_utils.config_common_kwargs` -> an empty dict (only read by
  `ConfigTester.check_config_arguments_init`, which returns early for composite configs such as `GLIPConfig`).

The sdist's `tests` folder is imported as the package `tests`; this repository's own `tests` folder is not a package
(no `__init__.py`; pytest imports its modules by file), so the two do not clash.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from email.parser import Parser
from pathlib import Path

import pytest
import transformers

__all__ = ["SOURCE_VARIABLE", "import_transformers_test_module", "transformers_tests_source"]

SOURCE_VARIABLE = "TRANSFORMERS_TESTS_SOURCE"

# Helper modules the sdist's common tests import but the sdist does not ship: module name -> stand-in attributes.
_STAND_INS = {
    "tests.exporters.test_export": {"ExportTesterMixin": type("ExportTesterMixin", (), {})},
    "tests.generation.test_utils": {"GenerationTesterMixin": type("GenerationTesterMixin", (), {})},
    "tests.utils.test_configuration_utils": {"config_common_kwargs": {}},
}


def transformers_tests_source() -> Path:
    """The transformers source folder given by `TRANSFORMERS_TESTS_SOURCE`, checked.

    Skips the calling test module when the variable is unset or the test-only dependency `parameterized` is missing;
    raises `FileNotFoundError` / `RuntimeError` (naming the variable and the fix) when it points at a wrong folder or a
    different transformers version than the installed one.
    """
    value = os.environ.get(SOURCE_VARIABLE)
    if not value:
        pytest.skip(
            f"{SOURCE_VARIABLE} is not set: run tools/run_transformers_common_tests.sh, or point it at an unpacked "
            f"transformers=={transformers.__version__} source distribution (the folder holding "
            "tests/test_modeling_common.py)",
            allow_module_level=True,
        )
    pytest.importorskip(
        "parameterized", reason="transformers' common tests need `parameterized` (pip install 'parameterized>=0.9')"
    )
    source = Path(value).resolve()
    tests_folder = source / "tests"
    if not (tests_folder / "test_modeling_common.py").is_file():
        raise FileNotFoundError(
            f"{SOURCE_VARIABLE}={value} does not hold tests/test_modeling_common.py; point it at the unpacked "
            f"transformers-{transformers.__version__} source distribution."
        )
    if not (tests_folder / "__init__.py").is_file():
        raise FileNotFoundError(
            f"{tests_folder} has no __init__.py (the sdist omits it; its ConfigTester imports that file): create an "
            "empty one, as tools/run_transformers_common_tests.sh does."
        )
    package_info = source / "PKG-INFO"
    if package_info.is_file():
        version = Parser().parsestr(package_info.read_text(encoding="utf-8"), headersonly=True)["Version"]
        if version != transformers.__version__:
            raise RuntimeError(
                f"{SOURCE_VARIABLE} holds the tests of transformers {version} but transformers "
                f"{transformers.__version__} is installed; use the source distribution of the installed version."
            )
    return source


def _register_stand_ins(tests_folder: Path) -> None:
    for module_name, attributes in _STAND_INS.items():
        relative_path = Path(*module_name.split(".")[1:]).with_suffix(".py")
        if (tests_folder / relative_path).is_file() or module_name in sys.modules:
            continue
        parts = module_name.split(".")
        for depth in range(2, len(parts) + 1):
            name = ".".join(parts[:depth])
            if name not in sys.modules:
                module = types.ModuleType(name, "Stand-in for a helper module the transformers sdist does not ship.")
                if depth < len(parts):
                    module.__path__ = []
                sys.modules[name] = module
        vars(sys.modules[module_name]).update(attributes)


def import_transformers_test_module(name: str) -> types.ModuleType:
    """Import `tests.<name>` (e.g. `test_modeling_common`) from the transformers source distribution."""
    source = transformers_tests_source()
    if str(source) not in sys.path:
        sys.path.insert(0, str(source))
    package = importlib.import_module("tests")
    package_file = Path(getattr(package, "__file__", None) or "").resolve()
    if package_file != source / "tests" / "__init__.py":
        raise RuntimeError(
            f"`import tests` gave {package_file or package!r}, not the transformers sdist at {source}; another "
            "`tests` package is on sys.path."
        )
    _register_stand_ins(source / "tests")
    return importlib.import_module(f"tests.{name}")
