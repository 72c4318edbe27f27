from setuptools import setup

# Metadata lives in pyproject.toml; this file keeps `python setup.py ...` and
# legacy editable installs working.
setup()
