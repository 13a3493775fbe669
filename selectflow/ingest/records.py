"""Record -> document: field mapping, chat rendering and validation.

Everything here is pure (no I/O). A record that cannot become a document raises `RecordError` whose
message is the short, specific quarantine reason ("field 'text' is int, expected string", ...).

Chat rendering (documented format, deterministic):

* ShareGPT (`chat.style: sharegpt`): the turns `[{"from": ROLE, "value": TEXT}, ...]` become
  ``"ROLE: TEXT"`` joined by a blank line, role names kept verbatim, e.g.
  ``"human: What is 2+2?\\n\\ngpt: 4"``.
* prompt/response (`chat.style: prompt_response`): the two fields become
  ``"PROMPT_FIELD: PROMPT\\n\\nRESPONSE_FIELD: RESPONSE"``, e.g. ``"prompt: Hi\\n\\nresponse: Hello"``
  with the default field names.

For chat records `min_text_chars` and the "empty text" check apply to the turn contents (the role prefixes
do not count), so a conversation whose turns are all blank is quarantined.
"""

from __future__ import annotations

import datetime
import decimal
import json
import re

from selectflow.config import IngestConfig, InputSpec

RAW_CHARS = 500  # characters of the offending record kept in quarantine.raw

_TYPE_NAMES = {
    str: "string",
    int: "int",
    float: "float",
    bool: "bool",
    list: "array",
    dict: "object",
    type(None): "null",
}

_MISSING = object()


class RecordError(ValueError):
    """A record that cannot become a document; str(exc) is the quarantine reason."""


def type_name(value) -> str:
    return _TYPE_NAMES.get(type(value)) or type(value).__name__


def human_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{round(n / size, 1):g} {unit}"
    return f"{n} B"


def too_large_reason(size: int, limit: int) -> str:
    return f"record is {human_bytes(size)} ({size} bytes) > max_record_bytes {human_bytes(limit)} ({limit} bytes)"


def utf8_error_reason(exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 at byte {exc.start}"


# Quarantine reason -> its kind, for counting: the reason without what differs from record to record (sizes,
# offsets, turn numbers, the parser's message). Covers the reasons written here and in readers.py; a reason that
# matches none of these is its own kind ("empty text", "field 'text' is int, expected string", ...).
_REASON_KINDS = [
    (re.compile(pattern, re.DOTALL), kind)
    for pattern, kind in (
        (r"record is .* > max_record_bytes .*", "record too large"),
        (r"not valid UTF-8 at byte \d+.*", "not valid UTF-8"),
        (r"(read error|malformed JSON|row cannot be written as JSON|text too short): .*", r"\1"),
        (r"text contains NUL at char \d+", "text contains NUL"),
        (r"(text|record) contains a lone surrogate .*", r"\1 contains a lone surrogate"),
        (r"(field '.*' missing) \('.*' is \w+, expected object\)", r"\1"),
        (r"(.*)\[\d+\]((?:\.from|\.value)? is \w+, expected \w+| has no '(?:from|value)')", r"\1[i]\2"),
    )
]


def reason_kind(reason: str) -> str:
    """The kind of problem a quarantine reason names, e.g. "record too large" for "record is 2.1 MB (...) > ..."."""
    for pattern, kind in _REASON_KINDS:
        if match := pattern.fullmatch(reason):
            return match.expand(kind)
    return reason


def raw_excerpt(raw) -> str:
    """First RAW_CHARS characters of a record, bytes decoded with replacement, always encodable as UTF-8."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        text = bytes(raw[: RAW_CHARS * 4]).decode("utf-8", "replace")
    else:
        text = str(raw)
    text = text[:RAW_CHARS]
    # lone surrogates (from JSON \ud800 escapes) cannot be written to Arrow/Parquet
    return text.encode("utf-8", "replace").decode("utf-8")


def json_default(value):
    """json.dumps fallback for Parquet values that are not JSON types."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (datetime.date, datetime.time, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dump_record(obj: dict) -> str:
    """The original record as JSON: original key order, non-ASCII kept as is."""
    return json.dumps(obj, ensure_ascii=False, default=json_default)


def lookup(obj: dict, path: str):
    """obj[path]; a dotted path ("data.body") walks nested objects when no key has the literal name."""
    value = obj.get(path, _MISSING)
    if value is not _MISSING:
        return value
    if "." not in path:
        raise RecordError(f"field '{path}' missing")
    node = obj
    parts = path.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict):
            parent = ".".join(parts[:depth])
            raise RecordError(f"field '{path}' missing ('{parent}' is {type_name(node)}, expected object)")
        node = node.get(part, _MISSING)
        if node is _MISSING:
            raise RecordError(f"field '{path}' missing")
    return node


def check_text(text: str, content_chars: int, min_chars: int) -> int:
    """Validate a document text; return its UTF-8 length."""
    if content_chars == 0:
        raise RecordError("empty text")
    if content_chars < min_chars:
        raise RecordError(f"text too short: {content_chars} chars < min_text_chars {min_chars}")
    nul = text.find("\x00")
    if nul >= 0:
        raise RecordError(f"text contains NUL at char {nul}")
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise RecordError(
            f"text contains a lone surrogate U+{ord(text[exc.start]):04X} at char {exc.start} (not encodable as UTF-8)"
        ) from None


class RecordConverter:
    """Turns one parsed record (a dict) into (text, domain, n_bytes) for one InputSpec."""

    def __init__(self, spec: InputSpec, cfg: IngestConfig):
        self.min_chars = cfg.min_text_chars
        self.default_domain = spec.domain
        self.domain_field = spec.domain_field
        self.text_field = spec.text_field
        chat = spec.chat
        if chat is None:
            self._text = self._plain
        elif chat.style == "sharegpt":
            self.turns_field = chat.conversations_field
            self._text = self._sharegpt
        else:
            self.prompt_field = chat.prompt_field
            self.response_field = chat.response_field
            self._text = self._prompt_response

    def convert(self, obj: dict) -> tuple[str, str | None, int]:
        text, content_chars = self._text(obj)
        n_bytes = check_text(text, content_chars, self.min_chars)
        return text, self.domain(obj), n_bytes

    def domain(self, obj: dict) -> str | None:
        if self.domain_field:
            value = obj.get(self.domain_field, _MISSING)
            if value is _MISSING and "." in self.domain_field:
                try:
                    value = lookup(obj, self.domain_field)
                except RecordError:
                    value = None
            if isinstance(value, str) and value.strip():
                return value
        return self.default_domain

    def _string_field(self, obj: dict, field: str) -> str:
        value = lookup(obj, field)
        if type(value) is not str:
            raise RecordError(f"field '{field}' is {type_name(value)}, expected string")
        return value

    def _plain(self, obj: dict) -> tuple[str, int]:
        text = self._string_field(obj, self.text_field)
        return text, len(text.strip())

    def _prompt_response(self, obj: dict) -> tuple[str, int]:
        prompt = self._string_field(obj, self.prompt_field)
        response = self._string_field(obj, self.response_field)
        text = f"{self.prompt_field}: {prompt}\n\n{self.response_field}: {response}"
        return text, len(prompt.strip()) + len(response.strip())

    def _sharegpt(self, obj: dict) -> tuple[str, int]:
        field = self.turns_field
        turns = lookup(obj, field)
        if type(turns) is not list:
            raise RecordError(f"field '{field}' is {type_name(turns)}, expected array")
        if not turns:
            raise RecordError(f"field '{field}' is an empty array")
        parts = []
        content_chars = 0
        for i, turn in enumerate(turns):
            if type(turn) is not dict:
                raise RecordError(f"{field}[{i}] is {type_name(turn)}, expected object")
            role = turn.get("from", _MISSING)
            value = turn.get("value", _MISSING)
            if role is _MISSING:
                raise RecordError(f"{field}[{i}] has no 'from'")
            if value is _MISSING:
                raise RecordError(f"{field}[{i}] has no 'value'")
            if type(role) is not str:
                raise RecordError(f"{field}[{i}].from is {type_name(role)}, expected string")
            if type(value) is not str:
                raise RecordError(f"{field}[{i}].value is {type_name(value)}, expected string")
            parts.append(f"{role}: {value}")
            content_chars += len(value.strip())
        return "\n\n".join(parts), content_chars
