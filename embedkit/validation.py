"""One place that turns settings into validated pydantic models, for every way a user gives them.

embedkit's settings live in pydantic models (:class:`~embedkit.mining.config.MiningConfig`,
:class:`~embedkit.models.config.ModelConfig`, the recipe sections...): each model is the only statement of its keys,
defaults, bounds and cross-field checks. Users reach the same model three ways, and this module speaks each one's
language in the one-line :class:`~embedkit.errors.ConfigError` it raises:

* a recipe key (``style="key"``): ``recipe.yaml:7: invalid value for 'training.lr': must be > 0 (got 0)`` -- the YAML
  line comes from a :class:`Locator`;
* a command-line flag (``style="flag"``): ``--num-negatives: invalid value: must be >= 1 (got 0)``; the flags
  themselves are derived from the model by :func:`add_model_flags`, so the CLI never restates a default or a bound;
* a keyword argument (``style="keyword"``): ``load_model: invalid value for keyword 'pooling': must be one of 'mean',
  'cls', 'last', 'latent_attention' or None (got 'max')``.

It is the lowest layer of embedkit (it imports only pydantic, PyYAML and :mod:`embedkit.errors`), so every stage
can use it.

Example:
    >>> from pydantic import BaseModel, Field
    >>> class Settings(BaseModel):
    ...     batch_size: int = Field(32, ge=1, description="texts per batch")
    >>> validate(Settings, {"batch_size": 8}).batch_size
    8
    >>> validate(Settings, {"batch_size": 0}, style="keyword", where="encode")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    embedkit.errors.ConfigError: encode: invalid value for keyword 'batch_size': must be >= 1 (got 0) ...
"""

from __future__ import annotations

import argparse
import difflib
import math
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from embedkit.errors import ConfigError

__all__ = [
    "KeyWhere",
    "Locator",
    "Style",
    "add_model_flags",
    "check_finite",
    "config_error",
    "model_from_args",
    "on_first_use",
    "split_key",
    "validate",
]

#: how a setting is named in messages: a recipe key, a CLI flag or a Python keyword argument
Style = Literal["key", "flag", "keyword"]

Loc = Sequence[str | int]


def split_key(key: str) -> list[str | int]:
    """``"data.datasets.0.path"`` -> ``["data", "datasets", 0, "path"]``."""
    return [int(p) if p.isdigit() else p for p in key.split(".")]


class Locator:
    """Maps a key path (``("training", "lr")``) to ``file:line`` using the YAML node marks.

    ``set_keys`` are the ``--set KEY=VALUE`` options applied on top of the file: a key they set is reported as
    ``--set KEY`` rather than as a file line.

    Example:
        >>> Locator("r.yaml", "training:\\n  lr: 0\\n").where(["training", "lr"])
        'r.yaml:2'
    """

    def __init__(self, path: str | None, text: str | None, set_keys: dict[str, str] | None = None) -> None:
        self.path = path
        self.root = None
        self.set_keys = set_keys or {}
        if text is not None:
            try:
                self.root = yaml.compose(text, Loader=yaml.SafeLoader)
            except yaml.YAMLError:
                self.root = None

    def where(self, loc: Loc, *, exact: bool = False) -> str | None:
        """``--set KEY`` when an option set ``loc``, else ``file:line`` of the deepest key of ``loc`` the file holds
        (``exact``: only when it holds ``loc`` itself, else ``None``)."""
        dotted = ".".join(str(p) for p in loc)
        for key in self.set_keys:
            if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
                return f"--set {key}"
        if self.path is None:
            return None
        node = self.root
        line = None
        found_all = True
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                found = None
                for k, v in node.value:
                    if str(k.value) == str(part):
                        found = (k, v)
                        break
                if found is None:
                    found_all = False
                    break
                line = found[0].start_mark.line + 1
                node = found[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                found_all = False
                break
        if exact and not found_all:
            return None
        return f"{self.path}:{line}" if line else self.path


class KeyWhere:
    """Points errors at the setting's dotted name under ``root`` (``mining.num_negatives``): a :class:`Locator`
    for settings that come from a Python call rather than a file."""

    def __init__(self, root: str) -> None:
        self.root = root

    def where(self, loc: Loc, *, exact: bool = False) -> str:
        return ".".join([self.root, *map(str, loc)])


# ----------------------------------------------------------------------------------------------------------------
# walking a model's fields


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def model_in(ann: Any) -> Any:
    """The BaseModel class inside ``X | None`` / ``list[X]`` annotations (or ``ann`` itself)."""
    if _is_model(ann):
        return ann
    for arg in typing.get_args(ann):
        found = model_in(arg)
        if _is_model(found):
            return found
    return ann


def fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """Valid field names of the (nested) model section at ``loc``."""
    cur: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not _is_model(cur) or part not in cur.model_fields:
            return []
        cur = model_in(cur.model_fields[part].annotation)
    return list(cur.model_fields) if _is_model(cur) else []


def _is_mapping(ann: Any) -> bool:
    return typing.get_origin(ann) is dict or any(typing.get_origin(a) is dict for a in typing.get_args(ann))


def _clean_loc(root: type[BaseModel], loc: Loc, etype: str) -> tuple[list[str | int], Any]:
    """pydantic's error location without its internal tags (union members such as ``bool`` / ``literal['auto']``,
    ``function-after[...]`` validators), and the annotation of the field it ends at."""
    out: list[str | int] = []
    cur: Any = root
    ann: Any = None
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(part, int):
            out.append(part)
        elif _is_model(cur):
            if part in cur.model_fields:
                out.append(part)
                ann = cur.model_fields[part].annotation
                cur = model_in(ann)
            elif last and etype == "extra_forbidden":
                out.append(part)
        elif cur is not None and _is_mapping(cur):
            out.append(part)
            cur = ann = None
    return out, ann


def _allowed(ann: Any) -> list[str]:
    """The values a ``Literal`` (optionally ``| None`` / ``| bool``) annotation allows, as Python writes them."""
    values: list[str] = []

    def walk(a: Any) -> None:
        if typing.get_origin(a) is Literal:
            values.extend(repr(v) for v in typing.get_args(a))
        elif a is type(None):
            values.append("None")
        elif a is bool:
            values.extend(["True", "False"])
        else:
            for sub in typing.get_args(a):
                walk(sub)

    walk(ann)
    return list(dict.fromkeys(values))


def _has_literal(ann: Any) -> bool:
    return typing.get_origin(ann) is Literal or any(_has_literal(a) for a in typing.get_args(ann))


def _literals(ann: Any) -> list[Any]:
    if typing.get_origin(ann) is Literal:
        return list(typing.get_args(ann))
    return [v for a in typing.get_args(ann) for v in _literals(a)]


def _one_of(values: list[str]) -> str:
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


# ----------------------------------------------------------------------------------------------------------------
# error messages

#: pydantic's type families in words
TYPE_WORDS = {
    "float": "a number",
    "int": "an integer",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping (key: value)",
    "model": "a mapping (key: value)",
}


def bounds(ctx: dict[str, Any]) -> str:
    """pydantic's range context (``{"ge": 1}``) as ``">= 1"`` (``""`` when the error is not about a range)."""
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return " and ".join(f"{ops[k]} {ctx[k]}" for k in ops if k in ctx)


class _Names:
    """How one style names a setting: in the message (``what``), in the fix (``setter``) and in ``where``."""

    def __init__(self, style: Style, prefix: str, locator: Locator | KeyWhere | None, where: str | None) -> None:
        self.style, self.prefix, self.locator, self.default_where = style, prefix, locator, where

    def key(self, loc: Loc) -> str:
        if self.style == "flag":
            return "--" + "-".join(str(p) for p in loc).replace("_", "-")
        if self.style == "keyword" and loc:  # lora={"r": 0} -> lora['r']
            return str(loc[0]) + "".join(f"[{p!r}]" for p in loc[1:])
        return self.prefix + ".".join(str(p) for p in loc)

    def what(self, loc: Loc) -> str:
        return {"key": "'{}'", "flag": "{}", "keyword": "keyword '{}'"}[self.style].format(self.key(loc))

    def setter(self, loc: Loc) -> str:
        if self.style == "keyword" and len(loc) > 1:
            return f"set {self.key(loc)} to"
        return {"key": "set '{}' to", "flag": "pass {}", "keyword": "pass {}="}[self.style].format(self.key(loc))

    def where(self, loc: Loc) -> str | None:
        if self.style == "flag" and loc:
            return self.key(loc)
        if self.locator is not None:
            return self.locator.where(loc)
        if self.default_where is None and not loc and self.style == "key" and self.prefix:
            return self.prefix.rstrip(".")  # a check across a whole section: the section's key
        return self.default_where


def config_error(
    exc: ValidationError,
    root: type[BaseModel],
    *,
    style: Style = "key",
    prefix: str = "",
    locator: Locator | KeyWhere | None = None,
    where: str | None = None,
) -> ConfigError:
    """The first problem of ``exc`` (the one earliest in the file, when a ``locator`` knows lines) as one line.

    Args:
        exc: what ``root.model_validate`` raised.
        root: the model that was validated.
        style: name settings as recipe keys, CLI flags or keyword arguments (see the module docstring).
        prefix: prepended to recipe keys (``"stages.1."``, ``"mining."``).
        locator: finds the YAML line of a recipe key.
        where: where to point when no line or flag applies (``"load_model"``, ``"mining"``).
    """
    names = _Names(style, prefix, locator, where)
    errors = exc.errors()

    def line_of(err: Any) -> int:
        w = locator.where(_clean_loc(root, err["loc"], err["type"])[0]) if locator else None
        try:
            return int(str(w).rsplit(":", 1)[1])
        except (IndexError, ValueError):
            return 1 << 30

    err = sorted(errors, key=line_of)[0]
    etype = err["type"]
    loc, ann = _clean_loc(root, err["loc"], etype)
    n_more = len({tuple(_clean_loc(root, e["loc"], e["type"])[0]) for e in errors}) - 1
    more = f" (+{n_more} more problem(s))" if n_more > 0 else ""
    at = names.where(loc)
    # a flag names itself in ``where``; the other styles name the setting in the message
    what = "" if style == "flag" and loc else (f" for {names.what(loc)}" if loc else "")
    if etype == "extra_forbidden":
        parent, bad = loc[:-1], str(loc[-1])
        valid = fields_at(root, parent)
        shown = names.key(loc)
        sub = ""
        if isinstance(err.get("input"), dict) and err["input"]:
            sub = "." + str(next(iter(err["input"])))
            shown += sub
        close = difflib.get_close_matches(bad, valid, n=1, cutoff=0.6)
        noun = "keyword" if style == "keyword" and not parent else "key"
        if close:
            good = names.key([*parent, close[0]])
            return ConfigError(f"unknown {noun} '{shown}' (did you mean '{good}{sub}'?){more}", where=at,
                               hint=f"rename it to '{good}'")
        return ConfigError(f"unknown {noun} '{shown}'{more}", where=at,
                           hint=f"valid {noun}s here: {', '.join(valid)}" if valid else "remove it")
    if etype == "missing":
        noun = {"key": "key", "flag": "option", "keyword": "keyword"}[style]
        shown = names.key(loc) if style == "flag" else f"'{names.key(loc)}'"
        return ConfigError(f"required {noun} {shown} is missing{more}", where=None if style == "flag" else at,
                           hint=f"add {shown}")
    got = err.get("input")
    got_s = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    if not loc:  # a check across several settings (a model validator): its own message says which
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        hint = f"fix '{prefix.rstrip('.')}'" if style == "key" and prefix else f"see {_help_of(style, where)}"
        return ConfigError(f"{msg}{more}", where=at, hint=hint)
    family = etype.split("_", 1)[0]
    allowed = _allowed(ann) if _has_literal(ann) else []
    if etype == "literal_error" or (allowed and family in TYPE_WORDS):
        allowed = allowed or [str(err.get("ctx", {}).get("expected", "?"))]
        return ConfigError(f"invalid value{what}: must be one of {_one_of(allowed)} (got {got_s}){more}", where=at,
                           hint=f"{names.setter(loc)} one of {_one_of(allowed)}")
    if family in TYPE_WORDS and ("type" in etype or "parsing" in etype):
        word = "True or False" if family == "bool" and style == "keyword" else TYPE_WORDS[family]
        return ConfigError(f"wrong type{what}: expected {word}, got {got_s}{more}", where=at,
                           hint=f"{names.setter(loc)} {word}")
    rng = bounds(err.get("ctx") or {})
    if rng:
        return ConfigError(f"invalid value{what}: must be {rng} (got {got_s}){more}", where=at,
                           hint=f"{names.setter(loc)} a value {rng}")
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return ConfigError(f"invalid value{what}: {msg} (got {got_s}){more}", where=at, hint=f"fix {names.what(loc)}")


def _help_of(style: Style, where: str | None) -> str:
    if style == "flag":
        return f"'embedkit {where} --help'" if where else "'--help'"
    return f"the documentation of {where}" if where else "the documentation of these settings"


def check_finite(obj: Any, *, style: Style = "key", prefix: str = "", locator: Locator | KeyWhere | None = None,
                 where: str | None = None, _loc: list[str | int] | None = None) -> None:
    """Refuse ``inf`` / ``nan`` anywhere in ``obj`` (``--set training.lr=.inf``, ``temperature: 1e999``).

    pydantic's range checks let ``inf`` through (``inf > 0``) and word ``nan`` as "greater than 0"; no embedkit
    setting has a meaning when it is not finite, so every value is checked before validation."""
    loc = _loc or []
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, style=style, prefix=prefix, locator=locator, where=where, _loc=[*loc, k])
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, style=style, prefix=prefix, locator=locator, where=where, _loc=[*loc, i])
    elif isinstance(obj, float) and not math.isfinite(obj):
        names = _Names(style, prefix, locator, where)
        what = "" if style == "flag" else f" for {names.what(loc)}"
        raise ConfigError(f"invalid value{what}: must be a finite number (got {obj})", where=names.where(loc),
                          hint=f"{names.setter(loc)} a finite number")


def validate(
    model: type[BaseModel],
    data: dict[str, Any],
    *,
    style: Style = "key",
    prefix: str = "",
    locator: Locator | KeyWhere | None = None,
    where: str | None = None,
) -> Any:
    """``model.model_validate(data)``, with non-finite numbers refused and errors as one-line ConfigErrors.

    The arguments after ``data`` are those of :func:`config_error`."""
    check_finite(data, style=style, prefix=prefix, locator=locator, where=where)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, model, style=style, prefix=prefix, locator=locator, where=where) from None


# ----------------------------------------------------------------------------------------------------------------
# command-line flags derived from a model

_NONE_WORDS = ("none", "null", "off")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def _flag_fields(model: type[BaseModel], exclude: set[str],
                 path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """``[(path, FieldInfo)]`` of every scalar setting, nested models flattened (``("lora", "r")``)."""
    out = []
    for name, field in model.model_fields.items():
        p = (*path, name)
        if ".".join(p) in exclude:
            continue
        sub = model_in(field.annotation)
        if _is_model(sub) and typing.get_origin(field.annotation) is not list:
            out.extend(_flag_fields(sub, exclude, p))
        else:
            out.append((p, field))
    return out


def _default_of(model: type[BaseModel], path: tuple[str, ...]) -> Any:
    """The default of the setting at ``path`` (a nested model's defaults come from its own fields)."""
    field = model.model_fields[path[0]]
    if len(path) == 1:
        return field.get_default(call_default_factory=True)
    parent = field.get_default(call_default_factory=True)
    if isinstance(parent, BaseModel):
        return getattr(parent, path[1]) if len(path) == 2 else _default_of(type(parent), path[1:])
    return _default_of(model_in(field.annotation), path[1:])


def _parser_for(ann: Any) -> tuple[dict[str, Any], str]:
    """argparse keywords (``type``, ``choices``, ``nargs``) for an annotation, and the metavar text."""
    args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_args(ann) else [ann]
    nullable = type(None) in typing.get_args(ann)
    literals = [v for a in args if typing.get_origin(a) is Literal for v in typing.get_args(a)]
    plain = [a for a in args if typing.get_origin(a) is not Literal]
    if typing.get_origin(ann) is Literal:
        literals, plain = list(typing.get_args(ann)), []
    kinds = [typing.get_origin(a) or a for a in plain]
    kw: dict[str, Any] = {}
    if list in kinds:
        inner = typing.get_args(plain[kinds.index(list)])
        kw["nargs"] = "+"
        base: Any = inner[0] if inner else str
    elif bool in kinds:
        base = bool
    elif plain:
        base = plain[0]
    else:
        base = None

    allowed = [str(v) for v in literals] + (["true", "false"] if base is bool else []) + (["none"] if nullable else [])

    def convert(text: str) -> Any:
        low = text.lower()
        if nullable and low in _NONE_WORDS:
            return None
        for v in literals:
            if low == str(v).lower():
                return v
        if base is bool:
            if low in _TRUE_WORDS:
                return True
            if low in _FALSE_WORDS:
                return False
        if base is None or base is bool:  # a closed set of words: say which ones
            raise argparse.ArgumentTypeError(f"invalid value {text!r} (choose from {', '.join(allowed)})")
        return base(text)

    convert.__name__ = getattr(base, "__name__", "value") if base is not None else "choice"
    kw["type"] = convert
    words = [str(v) for v in literals] + (["true", "false"] if base is bool else []) + (["none"] if nullable else [])
    if base is not None and base is not bool:
        metavar = getattr(base, "__name__", "VALUE").upper()
        metavar = metavar if not words else f"{metavar}|{'|'.join(words)}"
    else:
        metavar = "{" + ",".join(words) + "}"
    return kw, metavar


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def add_model_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[BaseModel],
    *,
    exclude: Sequence[str] = (),
    aliases: dict[str, Sequence[str]] | None = None,
    short: dict[str, str] | None = None,
) -> None:
    """Add one flag per setting of ``model``: name, type, choices, default and help all come from the model.

    ``field_name`` becomes ``--field-name`` (a nested model's ``lora.r``: ``--lora-r``); a ``Literal`` gives
    choices; ``X | None`` also takes ``none``; a boolean that defaults to false is a switch (``--bf16``), one that
    defaults to true is turned off with ``--no-field-name``. Help is the field's ``description`` plus its default.
    Unset flags are absent from the parsed namespace, so the model applies its own defaults (and knows which
    settings the user gave): read them back with :func:`model_from_args`.

    Args:
        exclude: dotted settings the command does not expose (e.g. ``"lora.merge_on_save"`` where nothing is
            saved unmerged).
        aliases: extra option strings for a setting (``{"drop_duplicates": ["--keep-duplicates"]}``).
        short: a short option for a setting (``{"output": "-o"}``).

    Example:
        >>> from pydantic import BaseModel, Field
        >>> class S(BaseModel):
        ...     steps: int = Field(100, ge=1, description="optimizer steps")
        >>> p = argparse.ArgumentParser(prog="x"); add_model_flags(p, S)
        >>> "optimizer steps (default: 100)" in p.format_help(), model_from_args(S, p.parse_args([])).steps
        (True, 100)
    """
    aliases, short = aliases or {}, short or {}
    for path, field in _flag_fields(model, set(exclude)):
        dotted = ".".join(path)
        dest = "_".join(path)
        flag = "--" + dest.replace("_", "-")
        default = _default_of(model, path)
        help_text = field.description or ""
        extra = list(aliases.get(dotted, ()))
        if dotted in short:
            extra.insert(0, short[dotted])
        if field.annotation is bool:
            if default:
                parser.add_argument(f"--no-{dest.replace('_', '-')}", *extra, dest=dest, action="store_false",
                                    default=argparse.SUPPRESS,
                                    help=f"turn off (on by default): {help_text}" if help_text else None)
            else:
                parser.add_argument(flag, *extra, dest=dest, action="store_true", default=argparse.SUPPRESS,
                                    help=help_text or None)
            continue
        kw, metavar = _parser_for(field.annotation)
        required = field.is_required() and len(path) == 1
        if not required and default is not None:
            help_text = f"{help_text} (default: {_show(default)})" if help_text else f"default: {_show(default)}"
        parser.add_argument(flag, *extra, dest=dest, default=argparse.SUPPRESS, required=required,
                            metavar=metavar, help=help_text or None, **kw)


def on_first_use(parser: argparse.ArgumentParser, add_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Call ``add_flags(parser)`` the first time ``parser`` parses or prints its help, not when it is built.

    ``embedkit --help`` builds every sub-command's parser; a command whose flags come from a settings model adds
    them through this, so only the command that runs imports its model (and that model's package).
    """
    done = False

    def ensure() -> None:
        nonlocal done
        if not done:
            done = True
            add_flags(parser)

    for name in ("parse_known_args", "format_help", "format_usage"):
        method = getattr(parser, name)

        def wrapper(*args: Any, _method: Callable[..., Any] = method, **kwargs: Any) -> Any:
            ensure()
            return _method(*args, **kwargs)

        setattr(parser, name, wrapper)


def model_from_args(
    model: type[BaseModel],
    args: argparse.Namespace,
    *,
    exclude: Sequence[str] = (),
    where: str | None = None,
    **extra: Any,
) -> Any:
    """The ``model`` the flags of :func:`add_model_flags` describe: only the flags given, plus ``extra`` settings.

    Errors name the flag (``--range-max: invalid value: must be >= 1 (got 0)``); a check across several settings
    points at ``where`` (the command's name)."""
    data: dict[str, Any] = {}
    for path, field in _flag_fields(model, set(exclude)):
        dest = "_".join(path)
        if hasattr(args, dest):
            value = getattr(args, dest)
            if isinstance(value, list) and len(value) == 1 and _has_literal(field.annotation) \
                    and value[0] in _literals(field.annotation):
                value = value[0]  # ``--lora-target-modules auto``: the word, not a list holding it
            cur = data
            for part in path[:-1]:
                cur = cur.setdefault(part, {})
            cur[path[-1]] = value
    for key, value in extra.items():
        data.setdefault(key, value)
    return validate(model, data, style="flag", where=where)

