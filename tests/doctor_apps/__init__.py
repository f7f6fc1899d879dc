"""Small Flask + SQLAlchemy apps for tests/test_doctor_apps.py: one module per app shape.

Each module has a `create_app(db_path)` factory; its docstring says which stale-data bug the
app has (or that it is clean). The apps' import name is the module's `__name__`, so the doctor
treats `tests.*` as the user's code.
"""
