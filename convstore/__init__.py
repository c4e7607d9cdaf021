"""convstore: keep Gemini Interactions API conversations on the client.

Stateless requests (``store: false``) replay the whole history as ``input``; convstore keeps that history in
SQLite or PostgreSQL as a tree of steps, rebuilds the exact ``input`` for the next request, and lets
conversations branch without copying anything.

This module is the public surface; everything not listed in ``__all__`` is private.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

import attrs as _attrs

from convstore._limits import Limits
from convstore._version import __version__
from convstore.budget import HeuristicCounter, MediaCosts, SentencePieceCounter, TokenBudget, TokenCounter
from convstore.codec import decode_content, decode_step, encode_content, encode_step, make_converter
from convstore.conversation import (
    AsyncConversation,
    AsyncCreateClient,
    AsyncStore,
    AsyncTurnStream,
    Conversation,
    CreateClient,
    RequestBody,
    RequestSettings,
    Store,
    StreamClient,
    TurnStream,
)
from convstore.conversation._media import FileStatus, MediaPolicy, RemoteDeletion
from convstore.errors import (
    AmbiguousIdError,
    APIConnectionError,
    APIError,
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
    CreateOutcomeUnknownError,
    DatabaseError,
    DataKeyNotFoundError,
    DecryptionError,
    EncryptionError,
    InvalidAgeError,
    InvalidExchangeError,
    KeyNotFoundError,
    KeyringRequiredError,
    LimitExceededError,
    MediaError,
    MediaNotHeldError,
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
    StreamError,
    TransferFormatError,
    UnverifiedExportWarning,
)
from convstore.model import (
    UNSET,
    AudioContent,
    Branch,
    CodeExecutionCallStep,
    CodeExecutionResultStep,
    Content,
    ConversationInfo,
    DocumentContent,
    Exchange,
    FileSearchCallStep,
    FileSearchResultStep,
    FunctionCallStep,
    FunctionResultStep,
    GoogleMapsCallStep,
    GoogleMapsResultStep,
    GoogleSearchCallStep,
    GoogleSearchResultStep,
    ImageContent,
    McpServerToolCallStep,
    McpServerToolResultStep,
    ModelOutputStep,
    Node,
    Page,
    ProcessingCallStep,
    ProcessingResultStep,
    RetrievalCallStep,
    RetrievalResultStep,
    SearchHit,
    SearchPage,
    Step,
    TextContent,
    ThoughtStep,
    Tree,
    UnknownContent,
    UnknownStep,
    Unset,
    UrlContextCallStep,
    UrlContextResultStep,
    UserInputStep,
    VideoContent,
)
from convstore.model import _tree as _model_tree
from convstore.model._interaction import Interaction, Usage
from convstore.store import (
    MEDIA_REF,
    ConversationSummary,
    Keyring,
    KeyStore,
    SchemaStatus,
    SQLKeyStore,
    WrappedKey,
    schema_status,
)
from convstore.store._check import Check, CheckReport, Problem
from convstore.store._files import Lifecycle
from convstore.store._prepare import Redactor
from convstore.store._transfer import ConversationDump, ConversationRows, export_lines, read_conversations

if _TYPE_CHECKING:
    from convstore.client import (
        AsyncGenAIClient,
        AsyncInteractionsClient,
        AsyncStream,
        GenAIClient,
        InteractionsClient,
        Stream,
    )

# The HTTP clients, imported when first used (PEP 562): they import httpx, which a program that only reads and
# writes its store never needs (``import convstore`` costs about a fifth less without it).
_LAZY = frozenset(
    {
        "AsyncGenAIClient",
        "AsyncInteractionsClient",
        "AsyncStream",
        "GenAIClient",
        "InteractionsClient",
        "Stream",
    }
)

__all__ = [
    "MEDIA_REF",
    "UNSET",
    "APIConnectionError",
    "APIError",
    "AmbiguousIdError",
    "AsyncConversation",
    "AsyncCreateClient",
    "AsyncGenAIClient",
    "AsyncInteractionsClient",
    "AsyncStore",
    "AsyncStream",
    "AsyncTurnStream",
    "AudioContent",
    "Branch",
    "BranchExistsError",
    "BranchNotFoundError",
    "BudgetExceededError",
    "Check",
    "CheckReport",
    "CodeExecutionCallStep",
    "CodeExecutionResultStep",
    "CodecError",
    "ConflictError",
    "Content",
    "Conversation",
    "ConversationDump",
    "ConversationErasedError",
    "ConversationExistsError",
    "ConversationInfo",
    "ConversationNotFoundError",
    "ConversationRows",
    "ConversationSummary",
    "ConvstoreError",
    "CorruptionError",
    "CreateClient",
    "CreateOutcomeUnknownError",
    "DataKeyNotFoundError",
    "DatabaseError",
    "DecryptionError",
    "DocumentContent",
    "EncryptionError",
    "Exchange",
    "FileSearchCallStep",
    "FileSearchResultStep",
    "FileStatus",
    "FunctionCallStep",
    "FunctionResultStep",
    "GenAIClient",
    "GoogleMapsCallStep",
    "GoogleMapsResultStep",
    "GoogleSearchCallStep",
    "GoogleSearchResultStep",
    "HeuristicCounter",
    "ImageContent",
    "Interaction",
    "InteractionsClient",
    "InvalidAgeError",
    "InvalidExchangeError",
    "KeyNotFoundError",
    "KeyStore",
    "Keyring",
    "KeyringRequiredError",
    "Lifecycle",
    "LimitExceededError",
    "Limits",
    "McpServerToolCallStep",
    "McpServerToolResultStep",
    "MediaCosts",
    "MediaError",
    "MediaNotHeldError",
    "MediaPolicy",
    "ModelOutputStep",
    "Node",
    "NodeNotFoundError",
    "NotFoundError",
    "OutcomeUnknownError",
    "Page",
    "Problem",
    "ProcessingCallStep",
    "ProcessingResultStep",
    "PurgeIncompleteError",
    "Redactor",
    "RemoteDeletion",
    "RequestBody",
    "RequestSettings",
    "RetrievalCallStep",
    "RetrievalResultStep",
    "SQLKeyStore",
    "SchemaError",
    "SchemaOutdatedError",
    "SchemaStatus",
    "SchemaUnknownError",
    "SearchHit",
    "SearchPage",
    "SearchQueryError",
    "SentencePieceCounter",
    "ShredPendingError",
    "Step",
    "Store",
    "StoreBusyError",
    "StoreError",
    "Stream",
    "StreamClient",
    "StreamError",
    "TextContent",
    "ThoughtStep",
    "TokenBudget",
    "TokenCounter",
    "TransferFormatError",
    "Tree",
    "TurnStream",
    "UnknownContent",
    "UnknownStep",
    "Unset",
    "UnverifiedExportWarning",
    "UrlContextCallStep",
    "UrlContextResultStep",
    "Usage",
    "UserInputStep",
    "VideoContent",
    "WrappedKey",
    "__version__",
    "decode_content",
    "decode_step",
    "encode_content",
    "encode_step",
    "export_lines",
    "make_converter",
    "read_conversations",
    "schema_status",
]

# Node.step decodes through the codec, which builds on the model: the root wires the two.
_model_tree.use_step_decoder(decode_step)


# What convstore exports says it is convstore's (as httpx does): reprs, tracebacks and docs name
# ``convstore.Store``, never the private module it is written in. Attrs classes resolve their annotations
# first, in the module that wrote them.
def _claim(value: _Any) -> None:
    named = isinstance(value, type) or (callable(value) and hasattr(value, "__code__"))
    if named and getattr(value, "__module__", "").startswith("convstore."):
        if _attrs.has(value):
            _attrs.resolve_types(value)
        value.__module__ = "convstore"


for _name in __all__:
    if _name not in _LAZY:
        _claim(globals()[_name])
del _name


def __getattr__(name: str) -> _Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module("convstore.client"), name)
    _claim(value)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
