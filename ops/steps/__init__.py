"""One module per operation, named as on the command line (db info -> db_info.py)."""
