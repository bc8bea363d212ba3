"""The application's SQLAlchemy models: one folder per entity, `models.py` in each."""
