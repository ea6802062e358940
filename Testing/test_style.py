"""House rules that must hold on every commit: ruff clean, and every file the Slicer CMake lists exists."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (it is in the test extra)")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_files_named_by_the_slicer_cmake_exist():
    module = ROOT / "DiffDenoise"
    text = (module / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "DiffDenoise")
    named = re.findall(r"^\s+([\w/.]+\.(?:py|png|ui|gz|md|txt))\s*$", text, re.M)
    assert len(named) >= 7 and "Resources/requirements.txt" in named
    for name in named:
        base = ROOT if name.startswith("DiffDenoiseLib/") else module
        assert (base / name).is_file(), name
    assert (ROOT / "DiffDenoise.png").is_file() and (module / "Resources/Icons/DiffDenoise.png").is_file()


def test_ui_file_parses_and_has_every_widget_the_widget_uses():
    import xml.etree.ElementTree as ElementTree

    tree = ElementTree.parse(ROOT / "DiffDenoise" / "Resources" / "UI" / "DiffDenoise.ui")
    names = {w.get("name") for w in tree.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (ROOT / "DiffDenoise" / "DiffDenoise.py").read_text()))
    assert used and used <= names, used - names


def test_slicer_extension_metadata_and_requirements_match_the_package():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies = project["dependencies"]
    cmake = dict(re.findall(r'^set\((EXTENSION_\w+) "([^"]*)"\)', (ROOT / "CMakeLists.txt").read_text(), re.M))
    assert cmake["EXTENSION_HOMEPAGE"] == project["urls"]["Homepage"]
    assert "PyTorch" in cmake["EXTENSION_DEPENDS"].split() and any(d.startswith("torch") for d in dependencies)
    lines = (ROOT / "DiffDenoise" / "Resources" / "requirements.txt").read_text().splitlines()
    requirements = [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]
    assert requirements == dependencies


def test_the_readme_reads_in_five_minutes_and_its_links_resolve():
    """At most about 250 lines; the detail lives in docs/, and every relative link of the README and the
    docs pages names a file that exists."""
    import re

    readme = ROOT / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= 250
    for page in (readme, *sorted((ROOT / "docs").glob("*.md"))):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
