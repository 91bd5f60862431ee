"""Fixtures for the template tests: template.yaml as data, and the SAM tool venv.

``template.yaml`` is read with the local stack's PyYAML loader, which turns CloudFormation's
short-form tags (``!Ref``, ``!GetAtt``, ``!Sub``, ``!If``...) into their long form
(``{"Ref": ...}``, ``{"Fn::GetAtt": [...]}``...), the way CloudFormation itself sees them.

The slow tests run the tools of ``.venv-sam`` (``make sam-setup``). When it is missing they
are skipped on a workstation and FAIL under CI (``CI`` set), so CI cannot go green without
having run them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from call_enricher_tools.local.template import load_cfn_yaml, merge_globals

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO / "template.yaml"
SAM_VENV = REPO / ".venv-sam"
SAM_BIN = SAM_VENV / "bin"
CHECKOV_BIN = SAM_VENV / "checkov" / "bin"
REGION = "eu-west-1"


@dataclass(frozen=True)
class Template:
    """template.yaml as data, with the SAM Globals merged into each function."""

    raw: dict[str, Any]

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.raw["Resources"]
        return resources

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        parameters: dict[str, dict[str, Any]] = self.raw.get("Parameters", {})
        return parameters

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == resource_type}

    @property
    def function_globals(self) -> dict[str, Any]:
        globals_: dict[str, Any] = self.raw.get("Globals", {}).get("Function", {})
        return globals_

    def function_properties(self, name: str) -> dict[str, Any]:
        """A function's properties as SAM resolves them: Globals merged (maps merge,
        the function's own values win; lists such as Layers are appended)."""
        return merge_globals(self.function_globals, self.resources[name]["Properties"])

    @property
    def functions(self) -> dict[str, dict[str, Any]]:
        return {
            name: self.function_properties(name)
            for name in self.of_type("AWS::Serverless::Function")
        }


@pytest.fixture(scope="session")
def template() -> Template:
    return Template(load_cfn_yaml(TEMPLATE_PATH.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------------------------
# SAM tool venv (slow tests)
# --------------------------------------------------------------------------------------------


def _require(paths: Sequence[Path]) -> None:
    missing = [str(p.relative_to(REPO)) for p in paths if not p.exists()]
    if not missing:
        return
    message = f"{', '.join(missing)} missing: run make sam-setup"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def find_python313() -> Path:
    """The interpreter that scripts/find-python313 prints (SAM builds python3.13 with it)."""
    result = subprocess.run(  # noqa: S603 - fixed script of this repository, no shell
        [str(REPO / "scripts" / "find-python313")],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/find-python313 found no Python 3.13: {result.stderr.strip()}")
    return Path(result.stdout.strip())


def offline_env(extra_path: Path | None = None) -> dict[str, str]:
    """The environment the SAM tools run in: a region, no credentials, no telemetry."""
    drop = {
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_PROFILE",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        SAM_CLI_TELEMETRY="0",
        SAM_CLI_CONTACT_SURVEY="0",
        BANDIT_DISABLE_UPDATE_CHECK="1",
    )
    if extra_path is not None:
        env["PATH"] = f"{extra_path}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass(frozen=True)
class ToolResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"$ {' '.join(self.args)}\n[exit {self.returncode}]\n{self.stdout}\n{self.stderr}"


def run_tool(args: Sequence[str | Path], *, env: Mapping[str, str], timeout: float) -> ToolResult:
    """Run one of the venv's tools from the repository root (no shell, no stdin)."""
    argv = [str(a) for a in args]
    proc = subprocess.run(  # noqa: S603 - tools of .venv-sam with fixed arguments, no shell
        argv,
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    return ToolResult(argv, proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def sam_tools() -> Path:
    """.venv-sam/bin (sam, cfn-lint, python with samtranslator); fails under CI if missing."""
    _require([SAM_BIN / "sam", SAM_BIN / "cfn-lint", SAM_BIN / "python"])
    return SAM_BIN


@pytest.fixture(scope="session")
def checkov_bin() -> Path:
    """.venv-sam/checkov/bin/checkov; fails under CI if missing."""
    _require([CHECKOV_BIN / "checkov"])
    return CHECKOV_BIN / "checkov"


@pytest.fixture(scope="session")
def sam_build(sam_tools: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sam build` (no container) of template.yaml into a fresh directory; its build dir."""
    python313 = find_python313()
    build_dir = tmp_path_factory.mktemp("sam") / "build"
    result = run_tool(
        [
            sam_tools / "sam",
            "build",
            "--template-file",
            TEMPLATE_PATH,
            "--build-dir",
            build_dir,
            "--parallel",
        ],
        env=offline_env(extra_path=python313.parent),
        timeout=900,
    )
    if result.returncode != 0:
        pytest.fail(f"sam build failed:\n{result.output}")
    return build_dir
