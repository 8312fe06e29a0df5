"""Data files shipped inside the package: JSON Schemas, rule definitions, default offline data profiles.

They are package data (see ``[tool.setuptools.package-data]``), so a wheel installed anywhere finds them;
nothing is looked up relative to a source checkout. ``SYNC_PROFILES_DIR`` still points at other profiles.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_path(*parts: str) -> Path:
    """A file or folder inside the installed ``sync_gateway`` package (installed unzipped, as pip does)."""
    return Path(str(files("sync_gateway").joinpath(*parts)))


SCHEMA_DIR = package_path("schemas")
RULES_DIR = SCHEMA_DIR / "rules"
DEFAULT_PROFILES_DIR = package_path("profiles", "defaults")
