"""Hand-written asyncio code of convstore.conversation; its blocking twin in ``_sync/`` is generated
from it by ``scripts/unasync.py``."""
