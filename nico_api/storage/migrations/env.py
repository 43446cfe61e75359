"""Alembic environment: migrations run on the connection `nico_api.storage.db.upgrade` hands over,
or, from the alembic command line, on $NICO_DATABASE_URL."""

from alembic import context
from sqlalchemy import Connection

from nico_api.storage.models import Base


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    from nico_api.config import Settings
    from nico_api.storage import db

    with db.engine_for(Settings.from_env()).begin() as fresh:
        run(fresh)
