"""Hand-written asyncio code of convstore.client; its blocking twin in ``_sync/`` is generated from it by
``scripts/unasync.py``."""
