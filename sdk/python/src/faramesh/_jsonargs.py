"""Python values as the JSON the daemon decides on.

The hot path converts nothing up front: the client's encoder takes plain JSON values as they
are and calls ``json_default`` only for the others (``Decimal``, dates, dataclasses, pydantic
models, sets, …). ``to_json_args`` does the same conversion eagerly, where a converted copy is
wanted (LangChain tools, ``args=`` functions).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID


def json_default(v: Any) -> Any:
    """The JSON form of a value ``json`` does not encode by itself; ``TypeError`` when there is
    none (so a call does not run with arguments nobody could decide on)."""
    if isinstance(v, (set, frozenset)):
        return sorted(v, key=canonical)
    return _json_object(v, "args")


#: Compact JSON with sorted keys: the canonical text of a value (the key of a remembered defer).
canonical = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True, default=json_default
).encode

def to_json_args(value: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments as the daemon will see them: JSON values only. Decimals become numbers,
    dates ISO strings, dataclasses and pydantic models their fields; anything else that is
    not JSON raises ``TypeError`` (so the call does not run with arguments nobody governed)."""
    out = _json(dict(value), "args")
    assert isinstance(out, dict)
    return out


_SCALARS = (str, int, bool, type(None))


def _json(v: Any, path: str) -> Any:
    t = type(v)
    if t in _SCALARS:
        return v
    if t is dict and all(type(k) is str for k in v):
        return {k: _json(x, path) for k, x in v.items()}
    if isinstance(v, float):
        if not math.isfinite(v):
            raise TypeError(f"{path}: {v} is not a JSON number")
        return v
    if isinstance(v, _SCALARS):  # subclasses: str enums, IntEnum, …
        return _json_object(v, path) if isinstance(v, Enum) else v
    if isinstance(v, Mapping):
        return {_key(k, path): _json(x, f"{path}.{k}") for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json(x, f"{path}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, (set, frozenset)):
        items = [_json(x, f"{path}[]") for x in v]
        return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))
    return _json_object(v, path)


def _json_object(v: Any, path: str) -> Any:
    if isinstance(v, Enum):
        return _json(v.value, path)
    if isinstance(v, Decimal):
        if not v.is_finite():
            raise TypeError(f"{path}: {v} is not a JSON number")
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, (datetime, date, dtime)):
        return v.isoformat()
    if isinstance(v, (UUID, PurePath)):
        return str(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _json(dataclasses.asdict(v), path)
    dump = getattr(v, "model_dump", None)
    if callable(dump) and not isinstance(v, type):
        return _json(dump(mode="json"), path)
    raise TypeError(
        f"{path}: a {type(v).__name__} is not JSON; give @governed an args= function that "
        "says what the daemon should decide on"
    )


def _key(k: Any, path: str) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, (int, float, bool)) or k is None:
        return json.dumps(k)
    raise TypeError(f"{path}: key {k!r} is not a string")
