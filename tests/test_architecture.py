"""The package's layout: old module paths that stay public."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("name", ["cluster", "docker"])
def test_the_0_1_module_paths_re_export_the_presets(name: str) -> None:
    alias = importlib.import_module(f"pytest_netns.{name}")
    real = importlib.import_module(f"pytest_netns.presets.{name}")
    assert alias.__all__ == real.__all__
    assert all(getattr(alias, public) is getattr(real, public) for public in real.__all__)
