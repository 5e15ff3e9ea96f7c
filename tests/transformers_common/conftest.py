"""Markers that transformers' common test modules use (registered by transformers' own, unshipped, conftest)."""

TRANSFORMERS_TEST_MARKERS = {
    "accelerate_tests": "tests that need accelerate",
    "flash_attn_test": "tests of the flash-attention 2 kernels (GPU)",
    "flash_attn_3_test": "tests of the flash-attention 3 kernels (GPU)",
    "flash_attn_4_test": "tests of the flash-attention 4 kernels (GPU)",
    "torch_compile_test": "tests that run torch.compile",
    "slow": "slow tests (skipped unless RUN_SLOW=1)",
}


def pytest_configure(config):
    for name, description in TRANSFORMERS_TEST_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
