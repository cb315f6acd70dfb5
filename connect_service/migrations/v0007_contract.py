"""Credentials record their owner (the creating Access Key), a folder label and the live credential they test."""
import peewee as pw
from playhouse.migrate import migrate


class _AccessKey(pw.Model):
    id = pw.CharField(primary_key=True)

    class Meta:
        table_name = "access_key"


class _Credential(pw.Model):
    id = pw.CharField(primary_key=True)

    class Meta:
        table_name = "credential"


def up(migrator, db):
    migrate(
        migrator.add_column("credential", "owner_key_id", pw.ForeignKeyField(
            _AccessKey, field=_AccessKey.id, null=True, on_delete="SET NULL")),
        migrator.add_column("credential", "folder_id", pw.CharField(null=True)),
        migrator.add_column("credential", "live_credential_id", pw.ForeignKeyField(
            _Credential, field=_Credential.id, null=True, on_delete="SET NULL")),
    )
