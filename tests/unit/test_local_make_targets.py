"""The developer commands as `make` runs them (dry runs: `make -n`, nothing is installed).

`make build` must not install checkov (only the checkov scan needs it), first-run setup says
how long it takes and lets pip show its progress on a terminal, and `make check` is the
inner loop: the tests not marked slow.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str) -> str:
    """The commands `make -n` would run, as if every requirements file had just changed."""
    touched = [
        f"-W{name}"
        for name in (
            "requirements-dev.txt",
            "requirements-sam.txt",
            "requirements-checkov.txt",
        )
    ]
    result = subprocess.run(  # noqa: S603 - make with fixed arguments
        ["make", "--no-print-directory", "-n", *touched, *args],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_make_build_never_installs_checkov() -> None:
    commands = make("build")
    assert "requirements-sam.txt" in commands  # SAM CLI and cfn-lint: what building needs
    assert "checkov" not in commands


def test_the_checkov_scan_and_the_full_setup_install_checkov() -> None:
    assert "requirements-checkov.txt" in make("checkov")
    assert "requirements-checkov.txt" in make("template-check")
    assert "requirements-checkov.txt" in make("sam-setup")


def test_first_run_setup_says_how_long_and_shows_pip_progress_on_a_terminal() -> None:
    commands = make("setup")
    assert "first run: about 2 minutes" in commands
    # pip is quiet only when stdout is not a terminal (CI logs, pipes)
    assert "if [ -t 1 ]; then quiet=; else quiet=--quiet; fi" in commands
    assert "pip install --disable-pip-version-check --no-input $quiet -e ." in commands
    assert "source .venv/bin/activate" in commands


def test_make_check_runs_the_tests_not_marked_slow_and_is_in_help() -> None:
    assert 'pytest -m "not slow"' in make("pytest-fast")
    listed = subprocess.run(
        ["make", "--no-print-directory", "help"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "make check " in listed
    assert "make test " in listed
