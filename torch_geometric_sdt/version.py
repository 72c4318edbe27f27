"""The package version, defined once (read by ``pyproject.toml`` too)."""

__version__ = '0.1.0'
