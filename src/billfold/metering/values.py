"""Event values: exact JSON in and out, canonical text, dotted paths.

Pure functions, no I/O. Numbers in event data are never floats: request JSON
is parsed with `parse_float=Decimal`, and every number is written back in one
canonical plain-decimal form ("0.1", "1000", "-2.5"; never "1e3" or "1.50"),
so the stored text, the payload fingerprint and the text a filter compares
are the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, Rounded
from typing import Any

from billfold import limits

__all__ = [
    "EXACT",
    "DataError",
    "NonFinite",
    "canonical_json",
    "decimal_text",
    "loads",
    "numeric_value",
    "parse_path",
    "quote_json",
    "sanitize",
    "sanitize_json",
    "storable",
    "text_of",
    "value_at",
]

# Arithmetic on usage values: wide enough for any sum of bounded numbers, and
# trapping instead of rounding, so an inexact result is a bug, never a value.
EXACT = Context(
    prec=400, Emax=10_000, Emin=-10_000, traps=[InvalidOperation, Inexact, Rounded, Overflow]
)

# A dotted path's segment: a key of `data` a meter can address.
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A number sent as a string ("0.25") counts as that number in sums.
_DECIMAL_STRING_RE = re.compile(r"-?[0-9]{1,40}(?:\.[0-9]{1,40})?")


@dataclass(frozen=True, slots=True)
class NonFinite:
    """`NaN`, `Infinity` or `-Infinity` in request JSON: kept as a marker so
    the one event holding it is rejected, not the whole batch."""

    name: str


class DataError(ValueError):
    """A value that cannot be stored; `path` names it ("data.tokens")."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def loads(body: bytes | str) -> Any:
    """Request JSON with exact numbers: decimals as `Decimal`, integers as
    `int`, non-finite constants as `NonFinite` markers. Raises ValueError."""
    return json.loads(body, parse_float=Decimal, parse_constant=NonFinite)


def decimal_text(value: Decimal | int) -> str:
    """The canonical text of a number: plain notation, no exponent, no
    trailing zeros after the point, no negative zero."""
    if isinstance(value, int):
        return str(value)
    assert value.is_finite(), value
    if value.is_zero():
        return "0"
    # Decimal's own fixed-point formatting is exact (no context, no
    # rounding) and runs in C; only the trailing zeros are ours to drop.
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def storable(text: str) -> bool:
    """Whether both backends can store `text`: PostgreSQL holds no U+0000 in
    text or jsonb, and a lone surrogate is not UTF-8."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True  # ASCII encodes; only non-ASCII can hold a lone surrogate
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def sanitize(value: Any, path: str, depth: int = 0) -> Any:
    """`value` checked for storage: JSON types only, bounded depth, numbers
    finite and of bounded length, strings storable. Decimals that hold whole
    numbers become ints, so 1.0 and 1 are one value. Raises DataError."""
    if depth > limits.event_data_depth_max:
        raise DataError(f"nests deeper than {limits.event_data_depth_max} levels", path)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if not storable(value):
            raise DataError(
                "holds a character that cannot be stored (U+0000 or a lone surrogate)", path
            )
        return value
    if isinstance(value, int | Decimal):
        return _number(value, path)
    if isinstance(value, NonFinite):
        raise DataError(f"is {value.name}; numbers must be finite", path)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not key or len(key) > limits.event_data_key_length_max or not storable(key):
                raise DataError(
                    f"has a key that is empty, longer than {limits.event_data_key_length_max} "
                    "characters or not storable",
                    path,
                )
            out[key] = sanitize(item, f"{path}.{key}", depth + 1)
        return out
    if isinstance(value, list):
        return [sanitize(item, f"{path}.{index}", depth + 1) for index, item in enumerate(value)]
    raise DataError("is not a JSON value", path)


class _Bad(Exception):
    """A value `sanitize_json` refuses; `keys` is its path from the inside out."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.keys: list[str] = []


def sanitize_json(value: Any, path: str) -> tuple[Any, str]:
    """`sanitize(value, path)` and the canonical JSON of the result, in one
    pass over the value (ingest does this for every event). Raises DataError
    exactly as `sanitize` would."""
    try:
        if _plain(value, 0):
            # Only JSON-native values: the C encoder spells them canonically.
            return value, _dumps_canonical(value)
        return _clean(value, 0)
    except _Bad as bad:
        raise DataError(bad.message, ".".join([path, *reversed(bad.keys)])) from None


# An int longer than `limits.event_number_length_max` characters.
_INT_MAX = 10**limits.event_number_length_max
_INT_MIN = -(10 ** (limits.event_number_length_max - 1))


def _plain(value: Any, depth: int) -> bool:
    """Whether `value` holds only str, int, bool, None, dict and list, all
    storable: then `sanitize` returns it unchanged and its canonical JSON is
    what `json` writes with sorted keys. False when anything else appears
    (a Decimal, a marker); raises _Bad, as `_clean` would, for what is
    refused before that."""
    if depth > limits.event_data_depth_max:
        raise _Bad(f"nests deeper than {limits.event_data_depth_max} levels")
    kind = type(value)
    if kind is str:
        if not storable(value):
            raise _Bad("holds a character that cannot be stored (U+0000 or a lone surrogate)")
        return True
    if kind is int:
        # Out of bounds: `_clean` words the refusal.
        return bool(_INT_MIN < value < _INT_MAX)
    if value is None or kind is bool:
        return True
    if kind is dict:
        # Leaves (strings, small ints, true, false, null) are checked here
        # rather than by a call each, when they are within the depth limit.
        inline = depth < limits.event_data_depth_max
        for key, item in value.items():
            if not key or len(key) > limits.event_data_key_length_max or not storable(key):
                raise _Bad(
                    f"has a key that is empty, longer than {limits.event_data_key_length_max} "
                    "characters or not storable"
                )
            if inline:
                leaf = type(item)
                if leaf is int and _INT_MIN < item < _INT_MAX:
                    continue
                if leaf is str and storable(item):
                    continue
                if item is None or leaf is bool:
                    continue
            try:
                if not _plain(item, depth + 1):
                    return False
            except _Bad as bad:
                bad.keys.append(key)
                raise
        return True
    if kind is list:
        for index, item in enumerate(value):
            try:
                if not _plain(item, depth + 1):
                    return False
            except _Bad as bad:
                bad.keys.append(str(index))
                raise
        return True
    return False


def _clean(value: Any, depth: int) -> tuple[Any, str]:
    if depth > limits.event_data_depth_max:
        raise _Bad(f"nests deeper than {limits.event_data_depth_max} levels")
    kind = type(value)
    if kind is str:
        if not storable(value):
            raise _Bad("holds a character that cannot be stored (U+0000 or a lone surrogate)")
        return value, _quote(value)
    if kind is dict:
        clean: dict[str, Any] = {}
        texts: dict[str, str] = {}
        for key, item in value.items():
            if not key or len(key) > limits.event_data_key_length_max or not storable(key):
                raise _Bad(
                    f"has a key that is empty, longer than {limits.event_data_key_length_max} "
                    "characters or not storable"
                )
            try:
                clean[key], texts[key] = _clean(item, depth + 1)
            except _Bad as bad:
                bad.keys.append(key)
                raise
        body = ",".join(f"{_quote(key)}:{texts[key]}" for key in sorted(texts))
        return clean, f"{{{body}}}"
    if value is None:
        return None, "null"
    if kind is bool:
        return value, "true" if value else "false"
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        try:
            number = _number(value, "")
        except DataError as exc:
            raise _Bad(exc.message) from None
        return number, decimal_text(number)
    if isinstance(value, NonFinite):
        raise _Bad(f"is {value.name}; numbers must be finite")
    if kind is list:
        items: list[Any] = []
        item_texts: list[str] = []
        for index, item in enumerate(value):
            try:
                item_clean, item_text = _clean(item, depth + 1)
            except _Bad as bad:
                bad.keys.append(str(index))
                raise
            items.append(item_clean)
            item_texts.append(item_text)
        return items, f"[{','.join(item_texts)}]"
    # Subclasses of str, dict or list, and anything else: the general path.
    try:
        clean_value = sanitize(value, "", depth)
    except DataError as exc:
        raise _Bad(exc.message) from None
    return clean_value, canonical_json(clean_value)


def _number(value: int | Decimal, path: str) -> int | Decimal:
    if isinstance(value, Decimal) and value == value.to_integral_value():
        value = int(value) if value.adjusted() < limits.event_number_length_max else value
    text = decimal_text(value)
    if len(text) > limits.event_number_length_max:
        raise DataError(
            f"is a number longer than {limits.event_number_length_max} characters "
            "in plain notation",
            path,
        )
    return value


# The C escaper json.dumps(..., ensure_ascii=False) uses, without building
# an encoder per call.
_quote: Any = getattr(json.encoder, "c_encode_basestring", None) or json.encoder.encode_basestring


_dumps_canonical: Any = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), check_circular=False
).encode


def _make_c_dumps() -> Any:
    """`_dumps_canonical` straight from the C encoder `JSONEncoder.encode`
    builds anew on every call (most of its cost for a small event's data),
    built once; the same arguments, so the same text. None where the
    interpreter's encoder is not the one this was written against."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None

    def refuse(value: Any) -> Any:
        raise TypeError(f"not a JSON value: {type(value).__name__}")

    try:
        encode = make(None, refuse, _quote, None, ":", ",", True, False, True)
        if "".join(encode({"b": [1, None, True], "a": "é"}, 0)) != '{"a":"é","b":[1,null,true]}':
            return None
    except TypeError:
        return None

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    return dumps


_dumps_canonical = _make_c_dumps() or _dumps_canonical


def quote_json(text: str) -> str:
    """A string as a JSON string literal, non-ASCII kept as it is (as in
    `canonical_json`)."""
    quoted: str = _quote(text)
    return quoted


def _encode(value: Any, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(_quote(value))
    elif kind is dict:
        out.append("{")
        for index, key in enumerate(sorted(value)):
            if index:
                out.append(",")
            out.append(_quote(key))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif kind is int:
        out.append(str(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int | Decimal):
        out.append(decimal_text(value))
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, str):
        out.append(_quote(value))
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, canonical numbers: equal values, equal text."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


def parse_path(path: str) -> tuple[str, ...] | None:
    """The keys of a dotted path ("usage.output_tokens"), or None if it is not
    one: 1 to 8 segments of letters, digits, "_" and "-"."""
    if not path or len(path) > limits.meter_path_length_max:
        return None
    segments = tuple(path.split("."))
    if len(segments) > limits.meter_path_segments_max:
        return None
    if not all(_SEGMENT_RE.fullmatch(segment) for segment in segments):
        return None
    return segments


_MISSING = object()


def value_at(data: Any, segments: tuple[str, ...]) -> Any:
    """The value at a path of object keys, or None when any step is missing."""
    node = data
    for segment in segments:
        if not isinstance(node, dict):
            return None
        node = node.get(segment, _MISSING)
        if node is _MISSING:
            return None
    return node


def numeric_value(value: Any) -> Decimal | None:
    """The number a value counts as in sum, max, min and latest: a JSON
    number, or a string in plain decimal notation ("12.5"); anything else
    (booleans, other strings, objects, null) counts as no value."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, str) and _DECIMAL_STRING_RE.fullmatch(value):
        return Decimal(value)
    return None


def text_of(value: Any) -> str | None:
    """The text filters and groups compare: a string as itself, a number in
    canonical form, `true`/`false`, null as None, objects and arrays as
    canonical JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return canonical_json(value)
