"""keel's benchmarks: each figure is printed beside a reference measured in the same run.

Run from the repository root, e.g. ``python bench/run_all.py`` (``make bench``).
Not part of the test suite: the machine is shared and noisy, so only ratios
against the bare-FastAPI reference (``bench/bare_app.py``) mean anything.
"""
