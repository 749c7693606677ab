"""Registries: names in YAML (``type: FPN``) -> the classes that build them.

A ``Registry`` maps names to the classes that build one kind of object, its
``base`` (``MODELS`` builds ``nn.Module`` s); ``register`` refuses anything else.
``build`` turns a config node ``{type: Name, **args}`` into an object, checking
the arguments against the constructor's signature and type hints first, so a
typo or a value of the wrong type is reported with its key path
(``model.neck.out_channels``) instead of surfacing as a bare ``TypeError`` from
deep inside a constructor.

A constructor asks for *built children* through its type hints: a parameter
annotated with a class that is not plain data (``backbone: nn.Module``,
``pipeline: list[Transform]``) receives the built object(s); one annotated with
``dict`` receives the raw node.  Children are built by the parent's registry or
by one of the ``children`` registries it declares — the one whose ``base`` is
the most specific superclass of the annotation — and must be instances of the
annotation (``bbox_head: BaseDenseHead`` refuses an ``RPNHead``).  No other
registry is ever consulted.

A constructor that rejects its arguments — a ``ValueError`` (the Python
convention; ``BuildError``, raydet's ``ConfigError`` and ``DataError`` are
ValueErrors too) or torch's own ``RuntimeError`` for a size it cannot make —
becomes a one-line ``BuildError`` naming the key path.  Any other exception is
a bug in the constructor: it propagates with its traceback, noted with the key
path that was being built.

Every component module registers itself when it is imported.  A registry
imports its built-in modules (``builtins``) the first time it is searched or
registered into, so every process — a Ray worker, a Ray Data task — resolves
the same names without driver-side set-up, while a process that never builds
anything (Ray Train's controller, the run recorder) never imports torchvision
or the model code.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import importlib
import inspect
import types
import typing
from typing import Any, Callable, Iterable, Sequence, TypeVar

import torch

T = TypeVar("T")

_PLAIN_DATA = (int, float, str, bool, bytes, dict, list, tuple, set, type(None))


class BuildError(ValueError):
    """A config node that cannot be built; ``key_path`` says where it is."""

    def __init__(self, key_path: str, message: str):
        super().__init__(f"{key_path}: {message}" if key_path else message)
        self.key_path = key_path
        self.message = message


def nearest_names(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``name`` (case-insensitive), best first; near-ties only."""
    scored = sorted(
        ((difflib.SequenceMatcher(None, name.lower(), c.lower()).ratio(), c) for c in candidates),
        key=lambda item: -item[0],
    )
    if not scored or scored[0][0] < 0.6:
        return []
    best = scored[0][0]
    return [c for score, c in scored[:n] if score >= max(0.6, best - 0.05)]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'X'?)"`` or ``""``."""
    close = nearest_names(name, candidates)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def _short_list(names: Iterable[str], limit: int = 40) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


class Registry:
    """A name -> class table with checked, recursive ``build``.

    Args:
        name: what the registry holds, used in messages (``"MODELS"``).
        base: the class every member builds (``nn.Module``).  ``None`` when the base
            class is defined in a module that imports this one: that module then
            declares it with ``@REGISTRY.declare_base`` before registering members.
        children: the other registries whose members this one's members may be built
            with (``MODELS`` builds heads with ``TASK_UTILS``' assigners).
        factories: also accept functions whose return annotation is a ``base``
            subclass (else members must be ``base`` subclasses).
        builtins: the modules whose import registers the built-in members; imported
            on the first lookup or registration, before any other member is added.
    """

    def __init__(self, name: str, base: type | None = None, children: Sequence[Registry] = (),
                 factories: bool = False, builtins: Sequence[str] = ()):
        self.name = name
        self.base = base
        self.children = tuple(children)
        self.factories = factories
        self.builtins = tuple(builtins)
        self._builtins_imported = not self.builtins
        self.__members: dict[str, Callable[..., Any]] = {}

    @property
    def _members(self) -> dict[str, Callable[..., Any]]:
        """The name -> member table, with the built-in members in it."""
        if not self._builtins_imported:
            self._builtins_imported = True  # first: the built-in modules register into this registry
            try:
                for module in self.builtins:
                    importlib.import_module(module)
            except BaseException:
                self._builtins_imported = False
                raise
        return self.__members

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self._members)} members)"

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def names(self) -> list[str]:
        return sorted(self._members)

    def declare_base(self, base: type[T]) -> type[T]:
        """Class decorator: ``base`` is what every member builds (for a registry made without one)."""
        if self.base is not None and not _same_definition(self.base, base):
            raise TypeError(f"{self.name} already builds {_qualified(self.base)}; "
                            f"cannot make {_qualified(base)} its base")
        self.base = base
        return base

    def register(self, name: str | None = None, force: bool = False) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register()`` or ``@MODELS.register(name="X", force=True)``.

        Raises ``TypeError`` when the member does not build a ``base``, ``KeyError``
        when the name is taken by another definition (unless ``force``).
        """

        def add(obj: T) -> T:
            members = self._members  # the built-ins first: a user's member may replace one (force)
            self._check_builds_base(obj)
            key = name or obj.__name__  # type: ignore[attr-defined]
            old = members.get(key)
            if old is not None and old is not obj and not force and not _same_definition(old, obj):
                raise KeyError(
                    f"{self.name} already has {key!r} ({_qualified(old)}); "
                    f"choose another name or pass force=True to replace it"
                )
            members[key] = obj  # type: ignore[assignment]
            return obj

        return add

    def _check_builds_base(self, obj: Any) -> None:
        if self.base is None:
            raise TypeError(f"{self.name} has no base class yet; declare it with @{self.name}.declare_base first")
        base = _qualified(self.base)
        if inspect.isclass(obj):
            if not issubclass(obj, self.base):
                raise TypeError(f"{self.name} holds subclasses of {base}; {_qualified(obj)} is not one")
            return
        if not self.factories:
            raise TypeError(f"{self.name} holds subclasses of {base}; {_qualified(obj)} is not a class")
        returns = _type_hints(obj).get("return") if callable(obj) else None
        if not (inspect.isclass(returns) and issubclass(returns, self.base)):
            raise TypeError(f"a function in {self.name} must be annotated to return a {base} "
                            f"(-> {self.base.__name__}); {_qualified(obj)} is not")

    def registry_for(self, cls: type) -> Registry | None:
        """The registry that builds children annotated ``cls``: this one or one of its
        ``children``, whichever's ``base`` is the most specific superclass of ``cls``
        (ties: this one, then the children in order); ``None`` when none builds it."""
        for registry in (self, *self.children):
            registry._members  # noqa: B018 - imports the built-ins, which declare a registry's base
        candidates = [r for r in (self, *self.children) if r.base is not None and issubclass(cls, r.base)]
        return max(candidates, key=lambda r: len(r.base.__mro__), default=None)  # type: ignore[union-attr]

    def members_of(self, cls: type) -> list[str]:
        """Names of the members that are subclasses of ``cls``."""
        return sorted(k for k, m in self._members.items() if inspect.isclass(m) and issubclass(m, cls))

    def get(self, name: str, key_path: str = "") -> Callable[..., Any]:
        """The class registered as ``name``; an unknown name is a ``BuildError``."""
        if not isinstance(name, str):
            raise BuildError(key_path, f"'type' must be a name (text), got {name!r}")
        try:
            return self._members[name]
        except KeyError:
            raise BuildError(
                key_path,
                f"unknown {self.name} type {name!r}{did_you_mean(name, self._members)}; "
                f"available: {_short_list(self._members) or '(none registered)'}",
            ) from None

    def build(self, node: Any, key_path: str = "", **defaults: Any) -> Any:
        """Build ``node = {type: Name, **args}``; ``defaults`` fill args the node omits.

        Raises ``BuildError`` naming ``key_path`` (and the argument) on an unknown
        type, an unknown / missing / ill-typed argument, or a constructor failure.
        """
        factory, args, key_path = self._resolve(node, key_path, defaults)
        return call_checked(factory, args, key_path, child_registry=self)

    def check(self, node: Any, key_path: str = "", **defaults: Any) -> None:
        """Every check of ``build`` (children are built) except calling ``node``'s own constructor.

        For nodes whose constructor needs what is not here yet, e.g. a dataset
        whose annotation file lives on the cluster.
        """
        factory, args, key_path = self._resolve(node, key_path, defaults)
        check_arguments(factory, args, key_path, child_registry=self)

    def _resolve(self, node: Any, key_path: str, defaults: dict[str, Any]) -> tuple[Callable[..., Any], dict, str]:
        key_path = key_path or self.name.lower()
        if not isinstance(node, collections.abc.Mapping) or "type" not in node:
            raise BuildError(
                key_path,
                f"expected a mapping with a 'type:' key naming a {self.name} member, got {node!r}",
            )
        args = dict(node)
        type_name = args.pop("type")
        factory = self.get(type_name, f"{key_path}.type")
        for key, value in defaults.items():
            args.setdefault(key, value)
        return factory, args, key_path


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _same_definition(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are one definition (the same object, or its module imported again)."""
    return a is b or (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
        getattr(b, "__module__", None), getattr(b, "__qualname__", None))


def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    """Resolved type hints of a factory's parameters; unresolvable ones are left out."""
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    try:
        return typing.get_type_hints(target)
    except Exception:  # one bad forward reference: resolve the others one by one
        namespace = getattr(target, "__globals__", {})
        hints = {}
        for key, hint in getattr(target, "__annotations__", {}).items():
            try:
                hints[key] = eval(hint, namespace) if isinstance(hint, str) else hint  # noqa: S307 (annotation text)
            except Exception:
                continue
        return hints


def _union_args(annotation: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return None


def _component_class(annotation: Any) -> type | None:
    """The class a parameter wants *built* (``nn.Module`` in ``list[nn.Module] | None``)."""
    options = _union_args(annotation)
    if options is not None:
        found = [c for c in map(_component_class, options) if c is not None]
        return found[0] if found else None
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, collections.abc.Sequence):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return _component_class(args[0]) if args else None
    if inspect.isclass(annotation) and annotation is not object and not issubclass(annotation, _PLAIN_DATA):
        return annotation
    return None


def describe_type(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if inspect.isclass(annotation) and not typing.get_args(annotation):
        return annotation.__name__
    text = repr(annotation).replace("typing.", "")
    return text.replace("NoneType", "null")


def matches_type(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits a type hint (lists stand for tuples/sequences)."""
    if (annotation is Any or annotation is object or annotation is inspect.Parameter.empty
            or isinstance(annotation, (str, TypeVar))):
        return True
    options = _union_args(annotation)
    if options is not None:
        return any(matches_type(value, option) for option in options)
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return value in args
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple, collections.abc.Sequence) or annotation in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(matches_type, value, args))
        element = args[0] if args else Any
        return all(matches_type(v, element) for v in value)
    if origin in (dict, collections.abc.Mapping) or annotation in (dict, collections.abc.Mapping):
        if not isinstance(value, collections.abc.Mapping):
            return False
        if len(args) == 2:
            return all(matches_type(k, args[0]) and matches_type(v, args[1]) for k, v in value.items())
        return True
    if origin is not None:  # other generics (Callable[...], Iterable[...]): not checkable from YAML
        return True
    if inspect.isclass(annotation):
        return isinstance(value, annotation)
    return True


def _type_hint_for_text(value: Any, annotation: Any) -> str:
    """Extra advice when YAML 1.1 read a number as text (``1e-4`` is a string to PyYAML)."""
    if isinstance(value, str) and matches_type(0.5, annotation):
        try:
            float(value)
        except ValueError:
            return ""
        return f" — PyYAML reads {value} as text; write it with a dot, e.g. {float(value)!r}"
    return ""


def _holds_type_nodes(value: Any) -> bool:
    """Whether ``value`` is a ``type:`` node or a list holding one."""
    def is_node(item: Any) -> bool:
        return isinstance(item, collections.abc.Mapping) and "type" in item

    return is_node(value) or (isinstance(value, (list, tuple)) and any(map(is_node, value)))


def _build_children(value: Any, annotation: Any, key_path: str, parent: Registry) -> Any:
    """Build the ``type:`` nodes a parameter annotated with a component class receives.

    The registry that builds them is ``parent.registry_for(component)``; a node whose
    type is not a subclass of the annotation is refused before it is built.
    """
    component = _component_class(annotation)
    assert component is not None
    registry = parent.registry_for(component)
    if registry is None:
        builders = ", ".join(f"{r.name} builds {r.base.__name__}" for r in (parent, *parent.children) if r.base)
        raise BuildError(key_path, f"nothing here builds a {component.__name__} ({builders})")

    def build_one(item: Any, path: str) -> Any:
        if isinstance(item, collections.abc.Mapping):
            factory = registry.get(item["type"], f"{path}.type") if "type" in item else None
            if inspect.isclass(factory) and not issubclass(factory, component):
                fitting = ", ".join(registry.members_of(component)) or "(none registered)"
                raise BuildError(f"{path}.type", f"expected a {component.__name__}, but {item['type']} is not one; "
                                                 f"{component.__name__} types in {registry.name}: {fitting}")
            built = registry.build(item, path)
            if not isinstance(built, component):
                raise BuildError(path, f"expected a {component.__name__}, "
                                       f"but {item['type']!r} built a {type(built).__name__}")
            return built
        if item is None or isinstance(item, component):
            return item
        raise BuildError(path, f"expected a {component.__name__} config (a mapping with 'type:'), got {item!r}")

    if isinstance(value, (list, tuple)):
        return [build_one(item, f"{key_path}.{i}") for i, item in enumerate(value)]
    return build_one(value, key_path)


def check_arguments(factory: Callable[..., Any], args: dict[str, Any], key_path: str,
                    child_registry: Registry | None = None) -> dict[str, Any]:
    """``args`` checked against ``factory``'s signature and type hints, with children built.

    Parameters annotated with a component class get their ``type:`` nodes built
    (see ``Registry.registry_for`` for which registry builds them); returns the arguments
    ready for the call.
    """
    name = getattr(factory, "__name__", repr(factory))
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        signature = None
    if signature is not None:
        params = signature.parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        named = {k: p for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        for key in args:
            if key not in named and not takes_any:
                raise BuildError(
                    f"{key_path}.{key}",
                    f"{name} has no argument {key!r}{did_you_mean(key, named)}; "
                    f"its arguments are: {', '.join(named) or '(none)'}",
                )
        missing = [k for k, p in named.items() if p.default is p.empty and k not in args]
        if missing:
            raise BuildError(key_path, f"{name} needs {', '.join(repr(m) for m in missing)} (missing from the config)")
        hints = _type_hints(factory)
        for key in list(args):
            hint = hints.get(key)
            if hint is None:
                continue
            value = args[key]
            component = _component_class(hint)
            if component is not None and child_registry is not None and _holds_type_nodes(value):
                args[key] = _build_children(value, hint, f"{key_path}.{key}", child_registry)
            elif not matches_type(value, hint):
                advice = _type_hint_for_text(value, hint)
                if component is not None and isinstance(value, collections.abc.Mapping):
                    advice = f" — a {component.__name__} config needs a 'type:' key"
                raise BuildError(
                    f"{key_path}.{key}",
                    f"expected {describe_type(hint)}, got {value!r} ({type(value).__name__}){advice}",
                )
    return args


def _rejects_arguments(err: Exception) -> bool:
    """Whether a constructor's exception says its arguments are bad (vs. a bug in it).

    ``ValueError`` (with ``BuildError``, ``ConfigError``, ``DataError``) is Python's way;
    a ``RuntimeError`` raised inside torch is torch's (``nn.Conv2d(-2, 8, 3)``).
    """
    if isinstance(err, ValueError):
        return True
    if not isinstance(err, RuntimeError) or err.__traceback__ is None:
        return False
    innermost = err.__traceback__
    while innermost.tb_next is not None:
        innermost = innermost.tb_next
    return innermost.tb_frame.f_globals.get("__name__", "").partition(".")[0] == "torch"


def call_checked(factory: Callable[..., T], args: dict[str, Any], key_path: str,
                 child_registry: Registry | None = None) -> T:
    """Call ``factory(**args)`` after ``check_arguments``; works for registered classes,
    functions and dataclasses (config sections).

    A constructor that rejects its arguments (``_rejects_arguments``) becomes a
    ``BuildError`` naming the key path; any other exception propagates unchanged,
    with a note naming the key path (Python >= 3.11).
    """
    name = getattr(factory, "__name__", repr(factory))
    args = check_arguments(factory, dict(args), key_path, child_registry)
    try:
        return factory(**args)
    except BuildError:
        raise
    except Exception as err:
        if _rejects_arguments(err):
            raise BuildError(key_path, f"{name} rejected its arguments: {type(err).__name__}: {err}") from err
        if hasattr(err, "add_note"):
            err.add_note(f"while building {key_path} ({name})")
        raise


def build_section(section_class: type[T], node: Any, key_path: str) -> T:
    """Parse a plain config section (a mapping) into a dataclass, with the same checks."""
    assert dataclasses.is_dataclass(section_class)
    if node is None:
        node = {}
    if not isinstance(node, collections.abc.Mapping):
        raise BuildError(key_path, f"expected a mapping, got {node!r}")
    return call_checked(section_class, dict(node), key_path)


# The project's registries.  Members register themselves when their module is imported; each registry
# imports its built-in modules when it is first used.

#: What models are built with besides modules: anchor generators, box coders, assigners, samplers, pretrained weights.
TASK_UTILS = Registry("TASK_UTILS", base=object, builtins=["raydet.models"])
#: Backbones, necks, heads, RoI extractors, losses, detectors.
MODELS = Registry("MODELS", base=torch.nn.Module, children=[TASK_UTILS], builtins=["raydet.models"])
#: Box-aware image transforms; their base, ``Transform``, is declared in ``raydet.data.transforms.base``.
TRANSFORMS = Registry("TRANSFORMS", builtins=["raydet.data.transforms"])
#: Annotation readers -> records; their base, ``DetectionDataset``, is declared in ``raydet.data.datasets``.
DATASETS = Registry("DATASETS", children=[TRANSFORMS], builtins=["raydet.data.datasets"])
#: torch.optim classes, and functions that return an optimizer (e.g. one from another library).
OPTIMIZERS = Registry("OPTIMIZERS", base=torch.optim.Optimizer, factories=True, builtins=["raydet.optimizers"])
