"""What a client's request may be: the limits and shapes checked once, at parse, so that no
stage after it meets a value it cannot read.

The checks are on the fields tollway itself reads (the model, the messages and their parts,
tools, the stream flags, token limits...), with the types the providers' own APIs document,
and are permissive elsewhere: an unknown field or part type passes, because the upstream is
the judge of what it supports, and a gateway that refused a field it does not read would
break every client the day a provider adds one. They run on every request, so they are
plain type tests with a fast path for the common shapes (a message that is a role and a
string); each refusal is a 400 whose `param` names the field (`messages[3].content`).

Nesting is bounded for the whole body, read or not: a stage may re-serialise it (orjson
cannot write past 254 levels) or walk it, and nothing a model reads is 100 levels deep. The
same pass does both: the walkers know the depth of what they validate, and check_fields
walks only the containers no walker looks into, so the common agent step (messages of a
role and a string) costs no depth walk at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tollway.errors import GatewayError

MAX_DEPTH = 100  # containers inside containers, the body itself being the first

Check = Callable[[Any], bool]
Spec = tuple[Check, str]  # the test, and what it wants, for the message


def _deeper(value: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether a container nests deeper than `limit` levels, itself the first. Iterative,
    so a hostile body cannot exhaust the stack."""
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            return True
        for item in (node.values() if type(node) is dict else node):  # type: ignore[union-attr]
            t = type(item)
            if t is dict or t is list:
                push((item, depth + 1))
    return False


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether any JSON value nests deeper than `limit` levels (itself the first)."""
    t = type(value)
    return (t is dict or t is list) and _deeper(value, limit)


def nesting_error(field: str | None, limit: int = MAX_DEPTH) -> GatewayError:
    where = f"'{field}' is" if field else "the request body is"
    return GatewayError(400, "nesting_too_deep",
                        f"{where} nested deeper than {limit} levels, the gateway's limit",
                        param=field)


# --- the types ------------------------------------------------------------------------------

def kind_of(value: Any) -> str:
    """A JSON value's type, as a client would name it."""
    if value is None:
        return "null"
    return _KINDS.get(type(value), type(value).__name__)


_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
          list: "an array", dict: "an object"}


def wrong_type(param: str, expected: str, value: Any) -> GatewayError:
    if value is None:
        return GatewayError(400, "missing_field", f"'{param}' is required: {expected}",
                            param=param)
    return GatewayError(400, "invalid_type",
                        f"'{param}' must be {expected}, not {kind_of(value)}", param=param)


def wrong_value(param: str, message: str) -> GatewayError:
    return GatewayError(400, "invalid_value", f"'{param}' {message}", param=param)


def is_str(v: Any) -> bool:
    return type(v) is str


def is_bool(v: Any) -> bool:
    return type(v) is bool


def is_int(v: Any) -> bool:
    return type(v) is int


def is_count(v: Any) -> bool:
    """A token limit: a whole number of at least 1."""
    return type(v) is int and v >= 1


def is_number(v: Any) -> bool:
    t = type(v)
    return t is int or t is float


def is_object(v: Any) -> bool:
    return type(v) is dict


def is_str_or_object(v: Any) -> bool:
    t = type(v)
    return t is str or t is dict


def is_strs(v: Any) -> bool:
    return type(v) is list and all(type(s) is str for s in v)


def is_str_or_strs(v: Any) -> bool:
    return type(v) is str or is_strs(v)


def is_objects(v: Any) -> bool:
    return type(v) is list and all(type(s) is dict for s in v)


STR: Spec = (is_str, "a string")
BOOL: Spec = (is_bool, "a boolean")
INT: Spec = (is_int, "an integer")
COUNT: Spec = (is_count, "a positive integer")
NUMBER: Spec = (is_number, "a number")
OBJECT: Spec = (is_object, "an object")
STR_OR_OBJECT: Spec = (is_str_or_object, "a string or an object")
STRS: Spec = (is_strs, "an array of strings")
STR_OR_STRS: Spec = (is_str_or_strs, "a string or an array of strings")
OBJECTS: Spec = (is_objects, "an array of objects")


def _anything(v: Any) -> bool:
    return True


#: a field the dialect's own walker checks, type and depth, after check_fields
WALKED: Spec = (_anything, "")


def check_fields(obj: dict[str, Any], specs: dict[str, Spec], prefix: str = "",
                 depth: int = 1) -> None:
    """The fields of `obj` named in `specs` have their types (null means absent), and no
    other value of it nests past MAX_DEPTH, `obj` being at `depth`: one pass over the
    object's own keys (usually fewer than the specs), the depth walk only for containers
    nobody looks into (an unknown field, a tool's schema, metadata)."""
    get = specs.get
    for key, value in obj.items():
        spec = get(key)
        if spec is not None:
            if spec is WALKED:
                continue
            if value is not None and not spec[0](value):
                raise wrong_type(prefix + key, spec[1], value)
        t = type(value)
        if (t is dict or t is list) and _deeper(value, MAX_DEPTH - depth):
            raise nesting_error(prefix + key)


def require(obj: dict[str, Any], key: str, spec: Spec, prefix: str = "") -> Any:
    """A field that must be there, of its type."""
    value = obj.get(key)
    if not spec[0](value):
        raise wrong_type(prefix + key, spec[1], value)
    return value


def objects(value: Any, param: str, what: str) -> list[dict[str, Any]]:
    """`value` as an array of objects, or the 400 saying which item is not one."""
    if type(value) is not list:
        raise wrong_type(param, f"an array of {what}", value)
    for i, item in enumerate(value):
        if type(item) is not dict:
            raise wrong_type(f"{param}[{i}]", "an object", item)
    return value
