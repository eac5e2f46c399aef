"""The package as users install it: a wheel, not the source tree."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end: builds a wheel and runs it from a scratch venv

ROOT = Path(__file__).resolve().parent.parent


def test_the_built_wheel_installs_and_serves_with_its_lexicons() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_wheel.py")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "refused limit=500: in app.relay.feed.getTracks, integer limit with value `500`: is higher than maximum 100" in result.stdout
