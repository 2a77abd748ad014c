"""The registry's Alembic environment (``env.py``) and revisions (``versions/``), run by
``modelcycle.registry.migration``; a package so that they ship in the wheel."""
