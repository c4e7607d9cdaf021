"""Wire JSON <-> model objects, lossless, with errors that name the field.

The stored step JSON is the source of truth; the typed classes of ``convstore.model`` are a view of it. This
module converts between the two with a cattrs converter built by ``make_converter()`` (never the global one):

- Known ``type`` tags become their class; unknown tags become ``UnknownStep``/``UnknownContent`` holding the
  raw object, written back unchanged (cattrs' own tagged-union support would rewrite the tag, so the union
  hooks here dispatch by hand).
- Fields the class does not declare go to ``extra`` and come back out; an absent optional field is ``UNSET``,
  a JSON ``null`` is ``None``, and each is written back as it came. The keys come back in the order they
  came in (``WireObject.key_order``), so ``encode_step(decode_step(d))`` is ``d`` down to its JSON text.
- Primitive hooks are strict: a number where a string belongs is an error, not a silent ``str()``.
- Every problem is collected with its path (``content[0].text``) into one ``CodecError``. Messages say what
  kind of value was wrong, never the value: step content is private.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    IterableValidationError,
    IterableValidationNote,
)

from convstore._limits import DEFAULT_LIMITS, Limits, check_value, loads
from convstore.errors import CodecError, LimitExceededError
from convstore.model._base import BOOKKEEPING, UNSET, Unset, WireObject, _UnsetType
from convstore.model._content import KNOWN_CONTENT_TYPES, Content, UnknownContent
from convstore.model._sdk import is_sdk_object, sdk_json
from convstore.model._steps import KNOWN_STEP_TYPES, Step, UnknownStep

__all__ = [
    "decode_content",
    "decode_step",
    "dumps",
    "encode_content",
    "encode_step",
    "loads",
    "make_converter",
    "may_hold_surrogates",
    "normalize_step",
    "replace_surrogates",
    "shown",
    "text_problems",
]

T = TypeVar("T")

_JSON_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    dict: "an object",
    list: "an array",
    type(None): "null",
}


class _WrongType(TypeError):
    """A value of the wrong JSON type. The message names the types, never the value."""

    def __init__(self, expected: str, value: object) -> None:
        super().__init__(f"expected {expected}, got {_json_kind(value)}")


class _MissingField(KeyError):
    def __str__(self) -> str:
        return "required field is missing"


class _NullField(ValueError):
    def __str__(self) -> str:
        return "required field must not be null"


def _json_kind(value: object) -> str:
    for py_type, name in _JSON_NAMES.items():
        if type(value) is py_type:
            return name
    return f"a non-JSON {type(value).__name__}"


def _with_note(exc: Exception, note: str) -> Exception:
    # BaseException.add_note is 3.11+; cattrs reads __notes__ either way.
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
    return exc


def _strict(py_type: type, expected: str) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        # bool is an int in Python, but not in JSON.
        if type(value) is bool and py_type is not bool:
            raise _WrongType(expected, value)
        if py_type is float and type(value) is int:
            return value
        if not isinstance(value, py_type):
            raise _WrongType(expected, value)
        return value

    return hook


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list


def _structure_list(converter: cattrs.Converter, item_type: Any, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _WrongType("an array", value)
    items: list[Any] = []
    errors: list[Exception] = []
    for index, item in enumerate(value):
        try:
            items.append(converter.structure(item, item_type))
        except Exception as exc:
            errors.append(_with_note(exc, IterableValidationNote(f"index {index}", index, item_type)))
    if errors:
        raise IterableValidationError("invalid array", errors, list)
    return items


def _split_optional(annotation: Any) -> tuple[Any, bool, bool]:
    """``T | None | Unset`` -> (T, nullable, optional)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) not in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return annotation, False, False
    unset = Unset
    rest = [a for a in args if a is not type(None) and a != unset]
    nullable = type(None) in args
    optional = unset in args
    inner = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007 -- built at run time
    return inner, nullable, optional


def _make_object_hook(converter: cattrs.Converter, cls: type[WireObject]) -> Callable[[Any, Any], Any]:
    # Resolved once, in the module that wrote them (convstore.__init__ resolves what it exports before
    # naming it convstore's).
    attrs.resolve_types(cls)
    specs = []
    for field in attrs.fields(cls):
        if field.name in BOOKKEEPING:
            continue
        inner, nullable, optional = _split_optional(field.type)
        required = field.default is attrs.NOTHING
        specs.append((field.name, inner, nullable or optional, required))
    known = frozenset(name for name, *_ in specs) | {"type"}

    def hook(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise _WrongType("an object", value)
        kwargs: dict[str, Any] = {}
        errors: list[Exception] = []
        for name, inner, nullable, required in specs:
            if name not in value:
                if required:
                    errors.append(_with_note(_MissingField(name), AttributeValidationNote(name, name, inner)))
                continue
            raw = value[name]
            if raw is None:
                if nullable or inner is Any:
                    kwargs[name] = None
                else:
                    errors.append(_with_note(_NullField(), AttributeValidationNote(name, name, inner)))
                continue
            try:
                kwargs[name] = converter.structure(raw, inner)
            except Exception as exc:
                errors.append(_with_note(exc, AttributeValidationNote(name, name, inner)))
        if errors:
            raise ClassValidationError(f"invalid {cls.TYPE}", errors, cls)
        extra = {key: item for key, item in value.items() if key not in known}
        return cls(**kwargs, extra=extra, key_order=tuple(value))

    return hook


def _make_union_hook(
    converter: cattrs.Converter,
    known: Mapping[str, type[WireObject]],
    unknown: Callable[[dict[str, Any]], Any],
) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise _WrongType("an object", value)
        tag = value.get("type", attrs.NOTHING)
        if tag is attrs.NOTHING or not isinstance(tag, str):
            problem = _MissingField("type") if tag is attrs.NOTHING else _WrongType("a string", tag)
            note = AttributeValidationNote("type", "type", str)
            raise ClassValidationError("invalid type tag", [_with_note(problem, note)], dict)
        cls = known.get(tag)
        if cls is None:
            return unknown(value)
        return converter.structure(value, cls)

    return hook


def _structure_result(converter: cattrs.Converter, value: Any, allow_object: bool) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return _structure_list(converter, Content, value)
    if allow_object and isinstance(value, dict):
        return value
    raise _WrongType("a string, an array of content" + (" or an object" if allow_object else ""), value)


def _unstructure_object(converter: cattrs.Converter, obj: WireObject) -> dict[str, Any]:
    out: dict[str, Any] = {"type": obj.TYPE}
    for field in attrs.fields(type(obj)):
        if field.name in BOOKKEEPING:
            continue
        value = getattr(obj, field.name)
        if value is UNSET:
            continue
        out[field.name] = converter.unstructure(value)
    out.update(obj.extra)
    if not obj.key_order:
        return out
    # Back in the order the object was decoded from; keys set since (attrs.evolve) go last.
    ordered = {key: out[key] for key in obj.key_order if key in out}
    if len(ordered) < len(out):
        ordered.update((key, item) for key, item in out.items() if key not in ordered)
    return ordered


def make_converter() -> cattrs.Converter:
    """Build the converter between wire JSON and the model classes.

    Returns:
        A fresh ``cattrs.Converter``: ``structure(obj, Step)`` decodes, ``unstructure(step)`` encodes.
    """
    converter = cattrs.Converter()
    for py_type, name in ((str, "a string"), (int, "an integer"), (float, "a number"), (bool, "a boolean")):
        converter.register_structure_hook(py_type, _strict(py_type, name))
    converter.register_structure_hook(Any, lambda value, _: value)
    converter.register_structure_hook_func(
        lambda t: t == dict[str, Any], lambda value, _: _strict(dict, "an object")(value, None)
    )
    converter.register_structure_hook_func(
        _is_list,
        lambda value, t: _structure_list(converter, typing.get_args(t)[0], value),
    )
    for cls in (*KNOWN_STEP_TYPES.values(), *KNOWN_CONTENT_TYPES.values()):
        converter.register_structure_hook(cls, _make_object_hook(converter, cls))
        converter.register_unstructure_hook(cls, lambda obj: _unstructure_object(converter, obj))
    converter.register_structure_hook_func(
        lambda t: t == Step, _make_union_hook(converter, KNOWN_STEP_TYPES, lambda raw: UnknownStep(raw=raw))
    )
    converter.register_structure_hook_func(
        lambda t: t == Content,
        _make_union_hook(converter, KNOWN_CONTENT_TYPES, lambda raw: UnknownContent(raw=raw)),
    )
    converter.register_structure_hook_func(
        lambda t: t == (str | list[Content] | dict[str, Any]),
        lambda value, _: _structure_result(converter, value, allow_object=True),
    )
    converter.register_structure_hook_func(
        lambda t: t == (str | list[Content]),
        lambda value, _: _structure_result(converter, value, allow_object=False),
    )
    converter.register_unstructure_hook(UnknownStep, lambda obj: dict(obj.raw))
    converter.register_unstructure_hook(UnknownContent, lambda obj: dict(obj.raw))
    converter.register_unstructure_hook(_UnsetType, lambda obj: obj)
    return converter


@lru_cache(maxsize=1)
def _converter() -> cattrs.Converter:
    return make_converter()


def _problems(exc: BaseException, path: str, *, named: bool = False) -> list[tuple[str, str]]:
    """Flatten a cattrs error tree into ``(path, description)`` pairs.

    ``named``: the caller already put this exception's attribute name on ``path``.
    """
    if isinstance(exc, IterableValidationError):
        found: list[tuple[str, str]] = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            found.extend(_problems(sub, f"{path}[{note.index}]", named=True))
        found.extend((path, str(sub)) for sub in without)
        return found
    if isinstance(exc, ClassValidationError):
        found = []
        with_notes_c, without_c = exc.group_exceptions()
        for sub, attr_note in with_notes_c:
            found.extend(_problems(sub, f"{path}.{attr_note.name}" if path else attr_note.name, named=True))
        found.extend((path, str(sub)) for sub in without_c)
        return found
    notes = [n for n in getattr(exc, "__notes__", []) if isinstance(n, AttributeValidationNote)]
    if notes and not named:
        path = f"{path}.{notes[-1].name}" if path else notes[-1].name
    return [
        (path, str(exc) if isinstance(exc, (_WrongType, _MissingField, _NullField)) else type(exc).__name__)
    ]


def _decode(value: Any, target: Any, path: str) -> Any:
    try:
        return _converter().structure(value, target)
    except Exception as exc:
        raise CodecError(_problems(exc, path)) from None


def decode_step(value: Any, *, path: str = "") -> Step:
    """Decode one wire step into its model class.

    Args:
        value: A JSON object such as ``{"type": "user_input", "content": [...]}``.
        path: A prefix for error paths, e.g. ``steps[2]``.

    Returns:
        The typed step; an unknown ``type`` gives ``UnknownStep``.

    Raises:
        CodecError: ``value`` is not an object, has no string ``type``, or a known field is missing or of the
            wrong JSON type. ``CodecError.problems`` lists every such field with its path.
    """
    return typing.cast(Step, _decode(value, Step, path))


def decode_content(value: Any, *, path: str = "") -> Content:
    """Decode one content item (``{"type": "text", ...}``); see ``decode_step``."""
    return typing.cast(Content, _decode(value, Content, path))


def _unstructure(value: Any) -> dict[str, Any]:
    try:
        return typing.cast(dict[str, Any], _converter().unstructure(value))
    except RecursionError:  # a field holding JSON nested beyond any limit
        raise LimitExceededError("max_depth", DEFAULT_LIMITS.max_depth) from None


def encode_step(step: Step) -> dict[str, Any]:
    """Encode a model step to wire JSON; ``decode_step(encode_step(s)) == s`` and back.

    A decoded step encodes to the JSON it was decoded from, keys in the same order at every level.

    Raises:
        LimitExceededError: a field holds JSON nested too deep to encode.
    """
    return _unstructure(step)


def encode_content(content: Content) -> dict[str, Any]:
    """Encode a content item to wire JSON (see ``encode_step``)."""
    return _unstructure(content)


def dumps(value: Any) -> str:
    """Compact JSON text of a wire value, as stored and as sent.

    UTF-8 text is kept as is; a string holding a lone surrogate (which UTF-8 cannot carry, though JSON's
    ``\\ud800`` escapes can) makes the whole value fall back to ASCII escapes, which decode to the same
    string.

    Raises:
        CodecError: the value holds something JSON cannot carry (NaN, infinity, a non-JSON object).
    """
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CodecError([("", f"not representable as JSON ({type(exc).__name__})")]) from None
    except RecursionError:  # callers bound the depth first (check_value); this is the last guard
        raise LimitExceededError("max_depth", DEFAULT_LIMITS.max_depth) from None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text


# RFC 6838 section 4.2: type "/" subtype, each a restricted-name (a letter or digit, then up to 126 of these),
# then RFC 2045 parameters (";" token "=" token or quoted-string), which the API may send.
_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_PARAMETER = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MIME = re.compile(
    rf'{_NAME}/{_NAME}(?:[ \t]*;[ \t]*{_PARAMETER}=(?:{_PARAMETER}|"(?:[^"\\\x00-\x1f\x7f]|\\.)*"))*'
)


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text_problems(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Strings no surface can show or serve: a lone surrogate (U+D800-U+DFFF, which UTF-8 cannot carry and
    which JSON's ``\\ud800`` escapes can), in a key or a value; a ``mime_type`` that is not a media type
    (RFC 6838: ``type/subtype``, optional parameters; no control characters). Each by its path."""
    problems: list[tuple[str, str]] = []
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _has_surrogate(item):
                problems.append((where, "a lone surrogate (U+D800 to U+DFFF): not text that UTF-8 can carry"))
        elif isinstance(item, Mapping):
            for key, sub in item.items():
                inner = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and _has_surrogate(key):
                    problems.append((where, "a key with a lone surrogate (U+D800 to U+DFFF)"))
                    continue
                if key == "mime_type" and isinstance(sub, str) and not _MIME.fullmatch(sub):
                    problems.append(
                        (inner, "not a media type (RFC 6838: type/subtype, no control characters)")
                    )
                stack.append((sub, inner))
        elif isinstance(item, (list, tuple)):
            stack.extend((sub, f"{where}[{index}]") for index, sub in enumerate(item))
    problems.sort()
    return problems


def replace_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (for data stored before they were refused)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def shown(value: Any) -> Any:
    """A decoded JSON value with every lone surrogate in its strings replaced by U+FFFD: data stored before
    they were refused, made printable and encodable (what ``history()`` returns for it)."""
    if isinstance(value, str):
        return replace_surrogates(value) if _has_surrogate(value) else value
    if isinstance(value, list):
        return [shown(item) for item in value]
    if isinstance(value, dict):
        return {shown(key): shown(item) for key, item in value.items()}
    return value


def may_hold_surrogates(text: bytes) -> bool:
    """Whether stored JSON text may hold a lone surrogate: only as a ``\\ud800``-style escape."""
    return b"\\ud" in text or b"\\uD" in text


def normalize_step(
    value: Step | Mapping[str, Any], *, path: str = "", limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """Validate a step given as a model object, an object of the official SDK or wire JSON, and return its
    wire JSON.

    A mapping is validated by decoding it and then returned as given (as a plain dict), so a field this
    version does not model is stored exactly as the API sent it. A model object is encoded and its wire
    JSON decoded again, so a field given the wrong type (``UserInputStep(content="text")``) is refused
    here rather than when the stored step is read. An SDK object (``UserInputStep``, ...) becomes the JSON
    it stands for, its keys in the wire's order (``convstore.model._sdk``).

    Raises:
        CodecError: see ``decode_step``.
        LimitExceededError: nested deeper than ``limits.max_depth``, or (estimated) longer than
            ``limits.max_step_bytes``; checked before anything is decoded or encoded.
    """
    if isinstance(value, Mapping):
        if _is_text_step(value, limits):
            return value
        check_value(value, path=path, limits=limits, max_bytes=limits.max_step_bytes)
        wire = value if isinstance(value, dict) else dict(value)
        decode_step(wire, path=path)
        _refuse_text(wire, path)
        return wire
    if isinstance(value, (WireObject, UnknownStep)):
        try:
            wire = encode_step(value)
        except LimitExceededError:
            raise LimitExceededError("max_depth", limits.max_depth, path=path) from None
        check_value(wire, path=path, limits=limits, max_bytes=limits.max_step_bytes)
        decode_step(wire, path=path)
        _refuse_text(wire, path)
        return wire
    if is_sdk_object(value):
        sdk_wire = typing.cast(dict[str, Any], sdk_json(value))
        check_value(sdk_wire, path=path, limits=limits, max_bytes=limits.max_step_bytes)
        decode_step(sdk_wire, path=path)
        _refuse_text(sdk_wire, path)
        return sdk_wire
    raise CodecError([(path, f"expected a step object or a JSON object, got {type(value).__name__}")])


_TEXT_STEPS = ("user_input", "model_output")  # a tuple: a "type" that is no string is compared, not hashed


def _is_text_step(value: Any, limits: Limits) -> typing.TypeGuard[dict[str, Any]]:
    """Whether ``value`` is a step that ``normalize_step`` would return as it is, found without decoding it:
    a plain ``{"type": "user_input" | "model_output", "content": [{"type": "text", "text": str}, ...]}``
    (nothing else in either object), no text holding a lone surrogate, three levels deep at most and
    short enough that ``check_value``'s estimate (under 64 characters an object or item besides the texts)
    is within ``limits``. The usual step of a turn; any other is decoded and checked as usual."""
    if type(value) is not dict or len(value) != 2 or value.get("type") not in _TEXT_STEPS:
        return False
    if limits.max_depth < 3:
        return False
    content = value.get("content")
    if type(content) is not list:
        return False
    size = 64
    for item in content:
        if type(item) is not dict or len(item) != 2 or item.get("type") != "text":
            return False
        text = item.get("text")
        if type(text) is not str or _has_surrogate(text):
            return False
        size += 64 + len(text)
    return size <= limits.max_step_bytes


def _refuse_text(wire: Any, path: str) -> None:
    found = text_problems(wire, path)
    if found:
        raise CodecError(found)


def normalize_steps(
    values: Iterable[Step | Mapping[str, Any]],
    *,
    prefix: str = "steps",
    limits: Limits = DEFAULT_LIMITS,
    start: int = 0,
) -> list[dict[str, Any]]:
    """``normalize_step`` over a sequence, collecting every problem before raising one ``CodecError``.

    ``start`` is the index the paths give the first value (``steps[2]`` for the reply after two new steps).

    Raises:
        CodecError: every malformed step, each by its path.
        LimitExceededError: the first step beyond a limit (at once: the rest is not looked at).
    """
    out: list[dict[str, Any]] = []
    problems: list[tuple[str, str]] = []
    for index, value in enumerate(values, start):
        try:
            out.append(normalize_step(value, path=f"{prefix}[{index}]", limits=limits))
        except CodecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise CodecError(problems)
    return out
