import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def state_dict_spec() -> dict:
    """Every state_dict key and shape per variant, as the spec lists them (a copy kept in tests/data)."""
    return json.loads((DATA / "wavemlp_state_dict.json").read_text())


@pytest.fixture
def wmlp_exe() -> str:
    """The installed console script of the environment running the tests."""
    exe = Path(sys.executable).with_name("wmlp")
    assert exe.is_file(), f"wmlp is not installed next to {sys.executable}: run make install"
    return str(exe)
