"""The errors of the Interactions API, its streams and the media a request sends (``convstore.errors``
exports them)."""

from __future__ import annotations

from convstore.errors._core import ConvstoreError


class APIError(ConvstoreError):
    """The Interactions API answered with an error.

    Attributes:
        status_code: the HTTP status (None for an error event inside a stream).
        code: the error's ``code`` (an int in Google's standard shape, a string in the SDK's).
        status: Google's status name such as ``INVALID_ARGUMENT``, when given.
        message: the service's message (it describes the request, never the conversation).
        retry_after: the wait in seconds the server asked for, when it was beyond ``Limits.max_retry_wait``
            and so not slept (the error is raised at once instead).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: int | str | None = None,
        status: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.code = code
        self.status = status
        self.retry_after = retry_after
        prefix = f"HTTP {status_code}" if status_code is not None else "API error"
        detail = f" {status}" if status else ""
        super().__init__(f"{prefix}{detail}: {message}")


class APIConnectionError(APIError, ConnectionError):
    """The request got no answer: a network failure or a timeout, after retries."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class CreateOutcomeUnknownError(APIError):
    """A create with ``store: true`` may have reached the server, and its answer was lost (the connection
    broke after the body was sent, or the server answered 5xx). It is not retried: the server may have
    stored an interaction already, and a retry would store a second one. Look for it (``GET`` by id is
    impossible without the id; list your recent interactions in the console) or send again knowingly.

    Attributes:
        attempts: Requests sent for this call (the last one's outcome is unknown).
        cause: What happened: a transport error's class name, or ``HTTP <status>``.
    """

    def __init__(self, message: str, *, cause: str, attempts: int, status_code: int | None = None) -> None:
        self.cause = cause
        self.attempts = attempts
        super().__init__(message, status_code=status_code)


class MediaError(ConvstoreError):
    """A medium of a conversation's history cannot be sent as it is (too large to inline, say).

    Attributes:
        conversation_id: The conversation.
        node_id: The node that names it (None when not tied to one node).
    """

    def __init__(self, message: str, conversation_id: str, node_id: str | None = None) -> None:
        self.conversation_id = conversation_id
        self.node_id = node_id
        super().__init__(message)


class MediaNotHeldError(MediaError, LookupError):
    """A Files API uri in the history whose bytes convstore never had (uploaded by the app itself), so it
    cannot upload it again or inline it. Hand the bytes over with ``attach_media(uri, data, ...)``.

    Attributes:
        uri: The uri.
    """

    def __init__(self, conversation_id: str, node_id: str | None, uri: str) -> None:
        self.uri = uri
        where = f" (node {node_id})" if node_id else ""
        super().__init__(
            f"conversation {conversation_id}{where} names the file {uri}, whose bytes convstore does not "
            "hold: pass them to attach_media(uri, data, mime_type=...)",
            conversation_id,
            node_id,
        )


class StreamError(APIError, ValueError):
    """An event stream that is malformed, or that ended or broke before the interaction completed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
