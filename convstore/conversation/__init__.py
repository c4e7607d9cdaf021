"""The conversation facade: the store and the API client together (request, record, send, stream).

``Store`` and ``Conversation`` (and their async twins) are the public classes; ``_turn.Turn`` is the pure
object each turn runs.
"""

from convstore.conversation._async import AsyncConversation, AsyncCreateClient, AsyncStore, AsyncTurnStream
from convstore.conversation._replies import interaction_from_events, interaction_from_reply
from convstore.conversation._request import RequestBody, RequestSettings, StreamClient, new_input_steps
from convstore.conversation._sync import Conversation, CreateClient, Store, TurnStream
from convstore.conversation._turn import Turn

__all__ = [
    "AsyncConversation",
    "AsyncCreateClient",
    "AsyncStore",
    "AsyncTurnStream",
    "Conversation",
    "CreateClient",
    "RequestBody",
    "RequestSettings",
    "Store",
    "StreamClient",
    "Turn",
    "TurnStream",
    "interaction_from_events",
    "interaction_from_reply",
    "new_input_steps",
]
