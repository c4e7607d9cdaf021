"""Hand-written asyncio code of convstore.store; its blocking twin in ``_sync/`` is generated from it by
``scripts/unasync.py``."""
