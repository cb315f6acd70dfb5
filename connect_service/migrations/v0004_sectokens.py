"""Apps gain user verification (setting, encrypted secret) and connect-token revocation cut-offs."""
import peewee as pw
from playhouse.migrate import migrate


class _App(pw.Model):
    id = pw.CharField(primary_key=True)

    class Meta:
        table_name = "app"


class _TokenRevocation(pw.Model):
    app = pw.ForeignKeyField(_App, on_delete="CASCADE", index=False)
    user_id = pw.CharField()
    tokens_valid_after = pw.DateTimeField()

    class Meta:
        table_name = "token_revocation"
        primary_key = pw.CompositeKey("app", "user_id")


def up(migrator, db):
    migrate(
        migrator.add_column("app", "user_verification", pw.CharField(default="none")),
        migrator.add_column("app", "user_verification_secret_encrypted", pw.TextField(null=True)),
        migrator.add_column("app", "tokens_valid_after", pw.DateTimeField(null=True)),
    )
    with db.bind_ctx([_App, _TokenRevocation]):
        db.create_tables([_TokenRevocation])
