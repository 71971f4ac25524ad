# pyproject.toml is the source of truth; this shim keeps `python setup.py develop`
# and older tooling working.
from setuptools import setup

setup()
