"""Issue 12 item 10: the development SQLite file and ``secrets.json`` are created with mode 0600."""
import os
import stat

from connect_service.app import create_app
from connect_service.config import DEV_SECRET_FILE, load_config
from connect_service.db import database, write_transaction


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_development_secrets_and_sqlite_file_are_private(tmp_path, monkeypatch):
    old = os.umask(0o022)  # a usual umask: files would be world-readable by default
    try:
        instance = tmp_path / "instance"
        env = {"CONNECT_ENV": "development", "CONNECT_INSTANCE_PATH": str(instance)}
        cfg = load_config(environ=env)
        assert mode(instance / DEV_SECRET_FILE) == 0o600
        app = create_app(cfg, require_schema=False)
        with app.app_context(), database.connection_context():
            database.execute_sql("CREATE TABLE t (x INTEGER)")
            database.execute_sql("INSERT INTO t VALUES (1)")
            db_file = instance / "connect.db"
            assert mode(db_file) == 0o600
            for sidecar in ("connect.db-wal", "connect.db-shm"):  # SQLite gives them the database's mode
                if (instance / sidecar).exists():
                    assert mode(instance / sidecar) == 0o600
            with write_transaction():  # the first write turn makes the writers' lock file
                database.execute_sql("INSERT INTO t VALUES (2)")
            assert mode(instance / "connect.db-writers") == 0o600
    finally:
        os.umask(old)
