"""Distribution of the hypervisor panel: the core package plus the built-in plugins.

Everything is discovered, nothing is listed by hand:

* packages: ``hypervisor_panel`` and all its subpackages (``find_packages``);
* built-in plugins: every folder of ``plugins/`` with an ``__init__.py``, installed under the
  unique name ``hypervisor_panel_plugins`` (``package_dir``), so that no generic top-level
  ``plugins`` package ends up in site-packages, and registered in the ``hypervisor_panel``
  entry-point group exactly as a third-party plugin would be;
* package data: every non-Python file inside a package folder (XML, templates, static
  files, whatever a plugin ships), except caches and dotfiles.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CORE = "hypervisor_panel"
PLUGINS_DIR = "plugins"
PLUGINS_PACKAGE = "hypervisor_panel_plugins"
SKIPPED_SUFFIXES = {".py", ".pyc", ".pyo"}


def builtin_plugins() -> list[str]:
    """Names of the built-in plugins: the package folders directly under ``plugins/``."""
    return sorted(p.parent.name for p in (ROOT / PLUGINS_DIR).glob("*/__init__.py"))


def discover_packages() -> dict[str, Path]:
    """Map every installed package name to its source folder."""
    found = {name: ROOT / name.replace(".", "/")
             for name in find_packages(str(ROOT), include=[CORE, f"{CORE}.*"])}
    found[PLUGINS_PACKAGE] = ROOT / PLUGINS_DIR
    for name in find_packages(str(ROOT / PLUGINS_DIR)):
        found[f"{PLUGINS_PACKAGE}.{name}"] = ROOT / PLUGINS_DIR / name.replace(".", "/")
    return found


def data_files(folder: Path) -> list[str]:
    """Non-Python files of one package folder (subfolders that are packages excluded)."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if (not path.is_file() or path.suffix in SKIPPED_SUFFIXES
                or any(part.startswith(".") or part == "__pycache__" for part in rel.parts)):
            continue
        parents = (folder.joinpath(*rel.parts[:i]) for i in range(1, len(rel.parts)))
        if any((parent / "__init__.py").is_file() for parent in parents):
            continue  # belongs to a subpackage, which lists it itself
        out.append(rel.as_posix())
    return out


PACKAGES = discover_packages()

setup(
    name="hypervisor-panel",
    version="0.1.0",
    description="A plugin-based control panel for KVM hosts through libvirt",
    python_requires=">=3.11",
    packages=sorted(PACKAGES),
    package_dir={PLUGINS_PACKAGE: PLUGINS_DIR},
    package_data={name: files for name, folder in PACKAGES.items()
                  if (files := data_files(folder))},
    include_package_data=False,
    zip_safe=False,
    install_requires=[
        "pluggy>=1.5",
        "libvirt-python>=9.0",
        "tinydb>=4.8,<5",
        "bottle>=0.13",
        "waitress>=3.0.2",
        "paramiko>=3.4",
        "apscheduler>=3.10,<4",
        "jsonschema>=4.20",
        "orjson>=3.9",
        "cryptography>=3.3",
        "pycdlib>=1.14",
        "pyyaml>=6.0",
        "libpass>=1.9",
        "zstandard>=0.22",
        "argon2-cffi>=23.1",
    ],
    extras_require={
        "desktop": ["pywebview[qt]>=5"],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "playwright>=1.45",
            "pytest-playwright>=0.5",
            "ruff>=0.6",
            "pyftpdlib>=1.5",
            "schemathesis>=4,<5",  # tests/test_fuzz_openapi.py
        ],
    },
    entry_points={
        "console_scripts": ["hypervisor-panel=hypervisor_panel.cli:main"],
        "hypervisor_panel": [
            f"{name}={PLUGINS_PACKAGE}.{name}" for name in builtin_plugins()
        ],
    },
)
