"""Migrate a pgstac database and upsert collections + items (runs inside ``.venv-stac``).

Usage: ``.venv-stac/bin/python infra/local/_pgstac_load.py DSN [COLLECTIONS.ndjson ITEMS.ndjson]``
(without files: migrate only).
Kept separate from ``stac_server.py`` because pypgstac lives in its own virtualenv.
"""

import sys
import time

from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods
from pypgstac.migrate import Migrate


def main() -> int:
    """Run the migration, then load the two ndjson files; print timings."""
    dsn, files = sys.argv[1], sys.argv[2:4]
    t0 = time.perf_counter()
    with PgstacDB(dsn=dsn) as db:
        version = Migrate(db).run_migration()
        t1 = time.perf_counter()
        if files:
            loader = Loader(db=db)
            loader.load_collections(files[0], Methods.upsert)
            loader.load_items(files[1], Methods.upsert)
    print(f"pgstac {version}: migrate {t1 - t0:.2f}s, load {time.perf_counter() - t1:.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
