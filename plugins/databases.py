"""Built-in plugin: SQL databases reached with host, port, database, user and password."""
from __future__ import annotations

from marshmallow import Schema

from connect_service import ConnectionType, fields, hookimpl


def database_schema(engine: str, default_port: int) -> type[Schema]:
    """The ``{host, port, database, user, password}`` schema, ``port`` defaulting to the engine's."""
    return Schema.from_dict({
        "host": fields.Host(required=True, metadata={"label": "Host", "placeholder": "db.example.com"}),
        "port": fields.Port(load_default=default_port, metadata={"label": "Port"}),
        "database": fields.NonBlank(required=True, metadata={"label": "Database"}),
        "user": fields.NonBlank(required=True, metadata={"label": "User"}),
        "password": fields.Secret(required=True, metadata={"label": "Password"}),
    }, name=f"{engine}Config")


class PostgreSQL(ConnectionType):
    name = "dynamiq.connections.PostgreSQL"
    title = "PostgreSQL"
    description = "A PostgreSQL database: host, port (5432), database, user and password."
    schema = database_schema("PostgreSQL", 5432)


class MySQL(ConnectionType):
    name = "dynamiq.connections.MySQL"
    title = "MySQL"
    description = "A MySQL database: host, port (3306), database, user and password."
    schema = database_schema("MySQL", 3306)


@hookimpl
def register_connection_types():
    return [PostgreSQL, MySQL]
