"""Connections name their linked platform account's key generically: ``app_slug`` becomes ``account_key``."""
from playhouse.migrate import migrate


def up(migrator, db):
    migrate(migrator.rename_column("connection", "app_slug", "account_key"))
