"""`make bench`: the fixed app's transactions page at 1,000,000 rows against the database's floor.

Modules: `dataset` (the data set, made once per backend and reused), `cases` (the fixed list of
filters and page depths), `measure` (in process, under gunicorn, the floor, OFFSET), `report`
(targets, table, JSON), `app` (the fixed app plus a numbered-page route for the OFFSET
comparison); tools: `explain` (the plans of the page's real statements) and `writecost` (what
the indexes cost writers). Run with `python -m bench --help`; lab/INDEXES.md explains the
indexes with their plans.
"""
