"""pyproject.toml ships every package and the configs inside the wheel."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "vaeflow").rglob("__init__.py")}
    assert set(setuptools["packages"]) == on_disk | {"vaeflow.conf"}
    assert setuptools["package-dir"]["vaeflow.conf"] == "conf"
    assert (ROOT / "conf" / "__init__.py").is_file()


def test_configs_are_importable_as_package_data():
    from importlib.resources import files

    conf = files("vaeflow.conf")
    assert conf.joinpath("train.yaml").is_file()
    assert conf.joinpath("posterior").joinpath("iaf.yaml").is_file()
