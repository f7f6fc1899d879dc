"""Locust loads with a consistency checker: broken and fixed apps side by side.

`python -m loadtests --help`; `make load CAUSE=<cause>`; see loadtests/README.md.
"""
