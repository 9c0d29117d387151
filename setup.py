"""Distribution of the hypervisor panel: the core package plus the built-in plugins.

The built-in plugins live in ``plugins/`` but are installed under the unique package name
``hypervisor_panel_plugins`` so that no generic top-level ``plugins`` package ends up in
site-packages.  They are registered through the ``hypervisor_panel`` entry-point group,
exactly as a third-party plugin would be.
"""

from setuptools import setup

BUILTIN_PLUGINS = ["storage_dir", "storage_lvm", "storage_nfs", "storage_rbd"]

setup(
    name="hypervisor-panel",
    version="0.1.0",
    description="A plugin-based control panel for KVM hosts through libvirt",
    python_requires=">=3.11",
    packages=[
        "hypervisor_panel",
        "hypervisor_panel.virt",
        "hypervisor_panel.web",
        "hypervisor_panel.web.api",
        "hypervisor_panel_plugins",
        *[f"hypervisor_panel_plugins.{name}" for name in BUILTIN_PLUGINS],
    ],
    package_dir={"hypervisor_panel_plugins": "plugins"},
    package_data={
        "hypervisor_panel": ["data/*.xml"],
        "hypervisor_panel.web": ["templates/*.tpl", "static/*"],
    },
    install_requires=[
        "pluggy>=1.5",
        "libvirt-python>=9.0",
        "tinydb>=4.8,<5",
        "bottle>=0.13",
        "cheroot>=10",
        "paramiko>=3.4",
        "apscheduler>=3.10,<4",
        "jsonschema>=4.20",
        "orjson>=3.9",
        "cryptography>=3.3",
    ],
    extras_require={
        "desktop": ["pywebview[qt]>=5"],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "playwright>=1.45",
            "pytest-playwright>=0.5",
            "ruff>=0.6",
        ],
    },
    entry_points={
        "console_scripts": ["hypervisor-panel=hypervisor_panel.cli:main"],
        "hypervisor_panel": [
            f"{name}=hypervisor_panel_plugins.{name}" for name in BUILTIN_PLUGINS
        ],
    },
)
