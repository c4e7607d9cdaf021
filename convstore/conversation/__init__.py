"""The conversation facade: the store and the API client together (request, record, send, stream)."""

from convstore.conversation._async import AsyncConversation, AsyncStore, AsyncTurnStream
from convstore.conversation._replies import interaction_from_events, interaction_from_reply
from convstore.conversation._request import RequestBody, build_body, new_input_steps
from convstore.conversation._sync import Conversation, Store, TurnStream

__all__ = [
    "AsyncConversation",
    "AsyncStore",
    "AsyncTurnStream",
    "Conversation",
    "RequestBody",
    "Store",
    "TurnStream",
    "build_body",
    "interaction_from_events",
    "interaction_from_reply",
    "new_input_steps",
]
