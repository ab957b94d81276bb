"""Fuzz targets for the pure codecs and the config loader, and the campaign that runs them.

`targets.py` holds one function per target, bytes in; each raises AssertionError when an
invariant breaks, and any other exception escaping is a bug too. `make test` runs them under
hypothesis (tests/unit/test_fuzz_targets.py); `make fuzz` runs them under atheris for a
million inputs or more (`campaign.py`).
"""
