"""Every exception convstore raises on purpose.

One base class, ``ConvstoreError``, so an app can catch everything the library means to raise. Leaves also
inherit the matching builtin where one fits (``NotFoundError`` is a ``LookupError``, ``CodecError`` a
``ValueError``), so code that already catches the builtin keeps working.

Messages name ids, field paths and counts. They never contain step content (message text, arguments,
results, media): conversations are private, and exception messages end up in logs.

::

    ConvstoreError
    ├── CodecError (ValueError)              malformed wire JSON; .path names the field
    ├── InvalidExchangeError (ValueError)    an exchange that cannot be written (empty, not a list)
    ├── BudgetExceededError (ValueError)     the newest exchange alone does not fit the token budget
    ├── InvalidAgeError (ValueError)         a purge age that is not positive, or a cutoff in the future
    ├── LimitExceededError (ValueError)      input beyond a configured bound (convstore.Limits); .limit
    ├── TransferFormatError (ValueError)     an export that cannot be imported; .line, .where, .field
    ├── StoreError
    │   ├── NotFoundError (LookupError)
    │   │   ├── ConversationNotFoundError
    │   │   ├── BranchNotFoundError
    │   │   └── NodeNotFoundError
    │   ├── ConflictError                    the branch head moved under a writer (retry after refresh)
    │   ├── BranchExistsError (ValueError)   a branch of that name exists already
    │   ├── ConversationExistsError (ValueError)  an imported conversation's id is in the store already
    │   ├── ConversationErasedError (ValueError)  an import of a conversation this store deleted
    │   ├── StoreBusyError (TimeoutError)    the database stayed locked longer than the busy timeout
    │   │   └── ShredPendingError            deleted, but the SQLite WAL could not be emptied yet
    │   ├── PurgeIncompleteError             a purge stopped on an error; .deleted_ids were deleted
    │   ├── DatabaseError                    any other database failure, translated; .cause says what to fix
    │   │   └── OutcomeUnknownError          the connection failed at COMMIT: the write may have happened
    │   ├── CorruptionError                  stored rows break an invariant reading relies on
    │   ├── EncryptionError                  encryption at rest: a key is missing or does not fit
    │   │   ├── KeyringRequiredError         an encrypted conversation, opened without a keyring
    │   │   ├── KeyNotFoundError (LookupError)       the application key id is not in the keyring
    │   │   ├── DataKeyNotFoundError (LookupError)   no data key in the key store (crypto-shredded)
    │   │   └── DecryptionError              authentication failed: a wrong key, or a moved/altered row
    │   └── SchemaError
    │       ├── SchemaOutdatedError          the database is at an older revision: upgrade it
    │       └── SchemaUnknownError           the database is newer than this library, or not convstore's
    ├── MediaError                           a medium of the history cannot be sent as it is
    │   └── MediaNotHeldError (LookupError)  a Files API uri whose bytes convstore never had
    └── APIError                             the Interactions API answered with an error
        ├── APIConnectionError (ConnectionError)  no answer: network failure or timeout
        ├── CreateOutcomeUnknownError        a store: true create may have reached the server; not retried
        └── StreamError (ValueError)         a malformed or broken event stream
"""

from __future__ import annotations

from convstore.errors._api import (
    APIConnectionError,
    APIError,
    CreateOutcomeUnknownError,
    MediaError,
    MediaNotHeldError,
    StreamError,
)
from convstore.errors._core import (
    AmbiguousIdError,
    BranchExistsError,
    BranchNotFoundError,
    BudgetExceededError,
    CodecError,
    ConflictError,
    ConversationErasedError,
    ConversationExistsError,
    ConversationNotFoundError,
    ConvstoreError,
    CorruptionError,
    DatabaseError,
    DataKeyNotFoundError,
    DecryptionError,
    EncryptionError,
    InvalidAgeError,
    InvalidExchangeError,
    KeyNotFoundError,
    KeyringRequiredError,
    LimitExceededError,
    NodeNotFoundError,
    NotFoundError,
    OutcomeUnknownError,
    PurgeIncompleteError,
    SchemaError,
    SchemaOutdatedError,
    SchemaUnknownError,
    SearchQueryError,
    ShredPendingError,
    StoreBusyError,
    StoreError,
    TransferFormatError,
    UnverifiedExportWarning,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "AmbiguousIdError",
    "BranchExistsError",
    "BranchNotFoundError",
    "BudgetExceededError",
    "CodecError",
    "ConflictError",
    "ConversationErasedError",
    "ConversationExistsError",
    "ConversationNotFoundError",
    "ConvstoreError",
    "CorruptionError",
    "CreateOutcomeUnknownError",
    "DataKeyNotFoundError",
    "DatabaseError",
    "DecryptionError",
    "EncryptionError",
    "InvalidAgeError",
    "InvalidExchangeError",
    "KeyNotFoundError",
    "KeyringRequiredError",
    "LimitExceededError",
    "MediaError",
    "MediaNotHeldError",
    "NodeNotFoundError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PurgeIncompleteError",
    "SchemaError",
    "SchemaOutdatedError",
    "SchemaUnknownError",
    "SearchQueryError",
    "ShredPendingError",
    "StoreBusyError",
    "StoreError",
    "StreamError",
    "TransferFormatError",
    "UnverifiedExportWarning",
]
