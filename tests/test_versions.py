"""The installed torch and transformers lie in the range pyproject.toml states (CI runs both ends)."""

from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

REQUIREMENTS = {Requirement(line).name: Requirement(line) for line in tomllib.loads(
    (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]}


@pytest.mark.parametrize("package", ["torch", "transformers", "lightning"])
def test_the_installed_version_is_in_the_stated_range(package):
    assert REQUIREMENTS[package].specifier.contains(version(package).split("+")[0]), (package, version(package))


def test_the_range_reaches_what_clusters_run():
    assert REQUIREMENTS["transformers"].specifier.contains("5.17.0")  # the GPU images' (DESIGN: 5.17)
    assert REQUIREMENTS["torch"].specifier.contains("2.11.0")
