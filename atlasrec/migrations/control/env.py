from alembic import context

from atlasrec.control.tables import ControlModel as Base

config = context.config
context.configure(
    connection=config.attributes["connection"],
    target_metadata=Base.metadata,
    version_table=config.attributes["version_table"],
)
with context.begin_transaction():
    context.run_migrations()
