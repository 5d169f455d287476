"""Routers, function specs, their options and their argument models.

A function module owns a :class:`Router` and registers functions on it with
``@router.function("devices/{device_id}/add")``. The argument model is built
from the signature's type hints when the function is decorated, so a bad
signature fails at import, not when the first device calls it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import pydantic

from gateway.errors import InvalidArguments, RegistryError
from gateway.topics import TopicTemplate, filters_overlap

ExecutorName = Literal["default", "inline", "local", "mesos"]
_EXECUTORS: tuple[ExecutorName, ...] = typing.get_args(ExecutorName)


@dataclass(frozen=True, kw_only=True, slots=True)
class FunctionOptions:
    """The options of :meth:`Router.function`, checked once when they are made.

    The one place an option is declared: the decorator takes exactly these
    keyword arguments, and :class:`FunctionSpec` carries them. A bad value
    raises :class:`RegistryError` saying what is wrong (the decorator adds
    which function).
    """

    executor: ExecutorName = "default"  # "default": the gateway's executor
    publish: str | None = None  # where an event's result goes (a template using the topic's parameters)
    timeout: float | None = None  # seconds (None: the gateway's call_timeout)
    # Safe to run twice: rerun after a crash instead of answered ``unavailable``.
    idempotent: bool = False
    max_age: float | None = None  # seconds after arrival past which the call is answered timeout, not run
    retries: int = 0  # reruns of a failed call (idempotent functions only), with backoff
    concurrency: int | None = None  # calls running at a time; more are answered overloaded
    # mesos executor only: one Mesos task per call, with these resources (None: the [mesos] cpus/mem).
    isolated: bool = False
    cpus: float | None = None
    mem: float | None = None

    def __post_init__(self) -> None:
        if self.executor not in _EXECUTORS:
            raise RegistryError(f"executor must be one of {', '.join(_EXECUTORS)}, not {self.executor!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise RegistryError(f"timeout must be positive, not {self.timeout!r}")
        if self.max_age is not None and self.max_age <= 0:
            raise RegistryError(f"max_age must be positive, not {self.max_age!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise RegistryError(f"concurrency must be at least 1, not {self.concurrency!r}")
        if self.retries < 0 or (self.retries and not self.idempotent):
            raise RegistryError("retries must be >= 0, and only an idempotent function is retried")
        if (self.cpus is not None or self.mem is not None) and not self.isolated:
            raise RegistryError("cpus and mem are the resources of an isolated function's task")
        if (self.cpus is not None and self.cpus <= 0) or (self.mem is not None and self.mem < 32):
            raise RegistryError("cpus must be positive and mem at least 32 (MB)")

    def mesos_only(self) -> list[str]:
        """The options set here that only the mesos executor honours."""
        given = {"isolated": self.isolated, "cpus": self.cpus is not None, "mem": self.mem is not None}
        return [name for name, is_set in given.items() if is_set]


@dataclass(frozen=True)
class FunctionSpec:
    """One registered function: its template, callable, argument model and options."""

    template: TopicTemplate
    func: Callable[..., Any]
    module: str
    model: type[pydantic.BaseModel]
    topic_adapters: Mapping[str, pydantic.TypeAdapter[Any]]
    is_async: bool
    options: FunctionOptions
    publish: TopicTemplate | None = None  # options.publish, parsed
    description: str = ""

    @property
    def key(self) -> str:
        """The stable identity of the function: its topic template."""
        return self.template.template

    @property
    def name(self) -> str:
        """``module.qualname`` of the function."""
        return f"{self.module}.{self.func.__qualname__}"

    def schema_summary(self) -> str:
        """A one-line argument schema such as ``a: int, b: int``."""
        parts = []
        for name, info in self.model.model_fields.items():
            annotation = info.annotation
            type_name = getattr(annotation, "__name__", None) or str(annotation)
            type_name = type_name.replace("typing.", "")
            suffix = "" if info.is_required() else "?"
            source = " (topic)" if name in self.topic_adapters else ""
            parts.append(f"{name}{suffix}: {type_name}{source}")
        return ", ".join(parts) or "(none)"

    def bind(self, topic_params: Mapping[str, str], payload_args: Mapping[Any, Any]) -> dict[str, Any]:
        """Validate topic parameters and payload arguments into keyword arguments.

        Topic parameters (always strings) are coerced to their annotated type;
        payload arguments are validated strictly. A key given by both is an error.
        """
        if (topic_params and not payload_args.keys().isdisjoint(topic_params)) or not all(
            type(key) is str for key in payload_args
        ):
            errors = _key_errors(topic_params, payload_args)
            raise InvalidArguments(_summary("invalid arguments", errors), errors)
        data = dict(payload_args)
        adapters = self.topic_adapters
        if adapters:
            errors = []
            for name, adapter in adapters.items():
                try:
                    data[name] = adapter.validate_python(topic_params[name])
                except pydantic.ValidationError as exc:
                    errors.extend(_details(exc, prefix=[name]))
            if errors:
                raise InvalidArguments(_summary("invalid topic parameters", errors), errors)
        try:
            model = self.model.model_validate(data, strict=True)
        except pydantic.ValidationError as exc:
            details = _details(exc)
            raise InvalidArguments(_summary("invalid arguments", details), details) from None
        # The model forbids extra fields, so its __dict__ is exactly the keyword arguments.
        kwargs: dict[str, Any] = model.__dict__
        return kwargs


def _key_errors(topic_params: Mapping[str, str], payload_args: Mapping[Any, Any]) -> list[dict[str, Any]]:
    """Errors for non-string argument names and payload keys that repeat a topic parameter."""
    errors: list[dict[str, Any]] = []
    for key in payload_args:
        if not isinstance(key, str):
            errors.append({"loc": [_plain(key)], "msg": "argument names must be strings", "type": "key_type"})
        elif key in topic_params:
            errors.append(
                {
                    "loc": [key],
                    "msg": f"argument {key!r} is given by the topic and must not be in the payload",
                    "type": "topic_conflict",
                }
            )
    return errors


def _summary(title: str, details: list[dict[str, Any]]) -> str:
    """``title: loc: msg`` for the first error, with a count of the others."""
    first = details[0]
    where = ".".join(str(part) for part in first["loc"]) or "arguments"
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return f"{title}: {where}: {first['msg']}{more}"


def _plain(value: object) -> str | int | float | bool | None:
    """A msgpack-safe, short rendering of a location element."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value if not isinstance(value, str) else value[:100]
    return type(value).__name__


def _details(exc: pydantic.ValidationError, prefix: list[Any] | None = None) -> list[dict[str, Any]]:
    """pydantic errors as ``{"loc", "msg", "type"}`` maps, without the input echoed."""
    out = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = list(prefix or []) + [_plain(part) for part in err["loc"]]
        out.append({"loc": loc, "msg": str(err["msg"]), "type": str(err["type"])})
    return out


class _ArgumentsBase(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=False)


def _where(func: Callable[..., Any]) -> str:
    """``module.qualname`` of a function being registered, for error messages."""
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)!s}"


_P = ParamSpec("_P")
_R = TypeVar("_R")
_First = TypeVar("_First")


def _options_of(
    options: Callable[_P, FunctionOptions],
) -> Callable[[Callable[Concatenate[_First, str, ...], _R]], Callable[Concatenate[_First, str, _P], _R]]:
    """Type a function's ``**options`` as exactly the keyword arguments ``options`` takes.

    So :class:`FunctionOptions` stays the only place an option is declared, and
    mypy still refuses an unknown option or a wrong type at the decorator.
    """

    def typed(method: Callable[Concatenate[_First, str, ...], _R]) -> Callable[Concatenate[_First, str, _P], _R]:
        return method

    return typed


@_options_of(FunctionOptions)
def build_spec(func: Callable[..., Any], template: str, **options: Any) -> FunctionSpec:
    """Build a :class:`FunctionSpec` (``options`` as :meth:`Router.function` takes them) or raise
    :class:`RegistryError` naming the function and the problem."""
    try:
        checked = FunctionOptions(**options)
    except RegistryError as exc:
        raise RegistryError(f"{_where(func)}: {exc}") from None
    return _build(func, template, checked)


def _build(func: Callable[..., Any], template: str, options: FunctionOptions) -> FunctionSpec:
    """The spec of ``func`` at ``template``, its options already checked."""
    where = _where(func)
    compiled = TopicTemplate.parse(template)
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise RegistryError(f"{where}: cannot resolve type hints: {exc}") from None
    signature = inspect.signature(func)
    fields: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise RegistryError(f"{where}: parameter {name!r} must be a plain or keyword-only parameter")
        if name not in hints:
            raise RegistryError(f"{where}: parameter {name!r} needs a type annotation")
        if name.startswith("$") or name.startswith("_"):
            raise RegistryError(f"{where}: parameter {name!r} must not start with '_' or '$'")
        default = ... if param.default is param.empty else param.default
        fields[name] = (hints[name], default)
    try:
        model = pydantic.create_model(f"{func.__name__}_arguments", __base__=_ArgumentsBase, **fields)
        # Topic parameters the function does not declare (often {device_id}) are not passed.
        adapters = {name: pydantic.TypeAdapter(fields[name][0]) for name in compiled.params if name in fields}
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as exc:
        raise RegistryError(f"{where}: unsupported argument type: {exc}") from None
    publish = options.publish
    publish_template = TopicTemplate.parse(publish) if publish else None
    if publish_template is not None:
        missing = set(publish_template.params) - set(compiled.params)
        if missing:
            raise RegistryError(
                f"{where}: publish template {publish!r} uses {sorted(missing)} which the topic does not provide"
            )
    return FunctionSpec(
        template=compiled,
        func=func,
        module=getattr(func, "__module__", "?"),
        model=model,
        topic_adapters=adapters,
        is_async=inspect.iscoroutinefunction(func),
        options=options,
        publish=publish_template,
        description=(inspect.getdoc(func) or "").split("\n", 1)[0],
    )


@dataclass
class Router:
    """A group of functions, usually one per module, composed with :meth:`include_router`."""

    prefix: str = ""
    specs: list[FunctionSpec] = field(default_factory=list)

    @_options_of(FunctionOptions)
    def function(self, template: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register the decorated function at ``template`` (relative to the router's prefix).

        Options (all optional, see :class:`FunctionOptions`): ``executor`` ("default": the
        gateway's, "inline", "local" or "mesos"); ``publish``: where an event's result goes;
        ``timeout`` seconds. ``idempotent=True`` says running it twice does no harm: a call
        interrupted by a crash is run again after the restart (otherwise it is answered
        ``unavailable``), and a failed call is retried ``retries`` times with backoff.
        ``max_age``: a request older than this many seconds when it would start is answered
        ``timeout`` instead. ``concurrency``: at most this many calls run at a time; more are
        answered ``overloaded``. ``isolated=True`` (mesos executor only): each call runs in a
        Mesos task of its own, with ``cpus``/``mem`` (MB), killed when the call ends or times
        out; for heavy or untrusted work.
        """

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self.specs.append(build_spec(func, _join(self.prefix, template), **options))
            return func

        return register

    def include_router(self, other: Router) -> None:
        """Add every function of ``other`` under this router's prefix."""
        for spec in other.specs:
            if self.prefix:
                spec = _build(spec.func, _join(self.prefix, spec.template.template), spec.options)
            self.specs.append(spec)


def _join(prefix: str, template: str) -> str:
    return f"{prefix.rstrip('/')}/{template.lstrip('/')}" if prefix else template


@dataclass(frozen=True)
class Registry:  # frozen but not slotted: the indexes below are cached properties
    """All functions the gateway serves, checked for overlapping templates."""

    specs: tuple[FunctionSpec, ...]

    @classmethod
    def from_specs(cls, specs: Iterable[FunctionSpec]) -> Registry:
        """Build a registry; two templates that can match one topic are refused."""
        ordered = tuple(specs)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                if filters_overlap(a.template.mqtt_filter, b.template.mqtt_filter):
                    raise RegistryError(
                        f"topic templates {a.key!r} ({a.name}) and {b.key!r} ({b.name}) can match the same topic"
                    )
        return cls(ordered)

    @classmethod
    def from_modules(cls, modules: Iterable[str]) -> Registry:
        """Import each module and collect the functions of its module-level routers."""
        specs: list[FunctionSpec] = []
        for name in modules:
            specs.extend(routers_of(name))
        return cls.from_specs(specs)

    def resolve(self, topic: str) -> tuple[FunctionSpec, dict[str, str]] | None:
        """The function whose template matches ``topic``, with its parameters."""
        levels = topic.split("/")
        for spec in self._by_depth.get(len(levels), ()):
            params = spec.template.match_levels(levels)
            if params is not None:
                return spec, params
        for spec in self._with_path:
            params = spec.template.match_levels(levels)
            if params is not None:
                return spec, params
        return None

    @functools.cached_property
    def _by_depth(self) -> dict[int, tuple[FunctionSpec, ...]]:
        """Templates without ``{name:path}``, by their number of levels (a topic matches only its depth)."""
        out: dict[int, list[FunctionSpec]] = {}
        for spec in self.specs:
            if not spec.template.has_path:
                out.setdefault(len(spec.template.levels), []).append(spec)
        return {depth: tuple(specs) for depth, specs in out.items()}

    @functools.cached_property
    def _with_path(self) -> tuple[FunctionSpec, ...]:
        return tuple(spec for spec in self.specs if spec.template.has_path)


def routers_of(reference: str) -> list[FunctionSpec]:
    """The specs of the router named by ``reference``: ``module`` (its ``router``) or ``module:attr``."""
    module_name, _, attr = reference.partition(":")
    attr = attr or "router"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"cannot import function module {module_name!r}: {exc}") from None
    router = getattr(module, attr, None)
    if not isinstance(router, Router):
        raise RegistryError(f"function module {module_name!r} has no Router named {attr!r}")
    return list(router.specs)
