"""Backends by name, and the config files that pick one backend per role.

A backend is registered under ``(role, name)`` with either its class or a lazy ``"module.path:Class"``
string, so naming a GPU backend in a config imports nothing heavy until it is built. Every backend class
has ``from_config(options)`` and a ``resources`` class attribute (:class:`~.protocols.Resources`), which
the Ray executor reads to place the stage.

A config file (YAML or TOML) has one top-level key per role, ``{backend: NAME, ...options}``, plus
``thresholds:`` and an optional ``pipeline:`` table; see :func:`load_backend_config`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML through the tomli backport when installed
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

from ..settings import PipelineSettings, Thresholds, settings_from_mapping, thresholds_from_mapping
from .protocols import ROLES, Resources

#: Backends that ship with the library, registered lazily (nothing is imported until built).
BUILTIN_BACKENDS: tuple[tuple[str, str, str], ...] = (
    ("vlm", "reference", "sparkle_video.generation.backends.reference:ReferenceVLM"),
    ("image_editor", "reference", "sparkle_video.generation.backends.reference:ReferenceImageEditor"),
    ("image_to_video", "reference", "sparkle_video.generation.backends.reference:ReferenceImageToVideo"),
    ("segmenter", "reference", "sparkle_video.generation.backends.reference:ReferenceSegmenter"),
    ("control_video", "reference", "sparkle_video.generation.backends.reference:ReferenceControlVideo"),
    ("scorer", "reference", "sparkle_video.generation.backends.reference:ReferenceScorer"),
    # model backends on stock diffusers / transformers classes (docs/generation-backends.md)
    ("vlm", "qwen-vl", "sparkle_video.generation.backends.qwen_vl:QwenVLM"),
    ("image_editor", "flux2-klein", "sparkle_video.generation.backends.flux2:Flux2KleinEditor"),
    ("image_to_video", "wan-i2v", "sparkle_video.generation.backends.wan_i2v:WanImageToVideo"),
    ("segmenter", "sam3", "sparkle_video.generation.backends.sam3:Sam3VideoSegmenter"),
    ("control_video", "wan-vace", "sparkle_video.generation.backends.vace:WanVACEControlVideo"),
    ("scorer", "editscore", "sparkle_video.generation.backends.editscore:EditScoreScorer"),
)

#: Keys of a role's config entry that are not backend options.
RESERVED_KEYS = ("backend", "resources")

_registry: dict[str, dict[str, str | type]] = {role: {} for role in ROLES}


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


def register_backend(role: str, name: str, target: str | type, *, replace: bool = False) -> None:
    """Register ``target`` (a class, or ``"module.path:ClassName"`` imported on first build) as ``name``.

    Registering a different target under a taken name raises unless ``replace=True``.
    """
    _check_role(role)
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ValueError(f"backend target must be 'module.path:ClassName', got {target!r}")
    elif not isinstance(target, type):
        raise TypeError(f"backend target must be a class or a 'module:Class' string, got {target!r}")
    current = _registry[role].get(name)
    if current is not None and current != target and not replace:
        raise ValueError(f"{role} backend {name!r} is already registered ({current!r}); pass replace=True")
    _registry[role][name] = target


for _role, _name, _target in BUILTIN_BACKENDS:
    register_backend(_role, _name, _target)


def available_backends(role: str) -> list[str]:
    """The names registered for ``role``, sorted."""
    _check_role(role)
    return sorted(_registry[role])


def _check_backend(role: str, name: str) -> None:
    _check_role(role)
    if name not in _registry[role]:
        known = ", ".join(available_backends(role)) or "none"
        raise ValueError(f"unknown {role} backend {name!r}; registered: {known}")


def backend_class(role: str, name: str) -> type:
    """The class registered as ``name`` for ``role``, importing its module if it is a lazy entry."""
    _check_backend(role, name)
    target = _registry[role][name]
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module_name), attr, None)
        if not isinstance(cls, type):
            raise ImportError(f"{role} backend {name!r}: {target!r} does not name a class")
        _registry[role][name] = cls
        target = cls
    return target


def backend_option_keys(cls: type) -> frozenset[str] | None:
    """The option keys ``cls`` accepts: its ``option_keys`` attribute, else its ``__init__`` keywords.

    ``None`` means "anything" (an ``__init__`` taking ``**kwargs`` without ``option_keys``): the class's
    own ``from_config`` is then the only check.
    """
    declared = getattr(cls, "option_keys", None)
    if declared is not None:
        return frozenset(declared)
    if dataclasses.is_dataclass(cls):
        return frozenset(f.name for f in dataclasses.fields(cls) if f.init)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(
        p.name
        for p in params
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


def check_backend_options(role: str, name: str, options: Mapping[str, Any]) -> None:
    """Refuse an option key the backend does not take, naming it and the keys it does take."""
    keys = backend_option_keys(backend_class(role, name))
    if keys is None:
        return
    for key in options:
        if key not in keys:
            known = ", ".join(sorted(keys)) or "none"
            raise ValueError(f"unknown option {key!r} for {role} backend {name!r}; options: {known}")


def build_backend(role: str, name: str, options: Mapping[str, Any] | None = None) -> Any:
    """Instantiate backend ``name`` for ``role`` with ``options`` through its ``from_config``."""
    options = dict(options or {})
    check_backend_options(role, name, options)
    cls = backend_class(role, name)
    from_config = getattr(cls, "from_config", None)
    instance = from_config(options) if from_config is not None else cls(**options)
    if not isinstance(instance, ROLES[role]):
        raise TypeError(f"{role} backend {name!r} ({cls.__name__}) does not implement {ROLES[role].__name__}")
    return instance


def backend_resources(role: str, name: str) -> Resources:
    """What one instance needs (``cls.resources``), defaulting to one CPU when the class says nothing."""
    resources = getattr(backend_class(role, name), "resources", None)
    return resources if isinstance(resources, Resources) else Resources()


@dataclass(frozen=True)
class BackendSpec:
    """One role's entry of a config: the backend name, its options, and optional resource overrides."""

    role: str
    backend: str
    options: Mapping[str, Any] = field(default_factory=dict)
    resources: Resources | None = None

    def build(self) -> Any:
        return build_backend(self.role, self.backend, self.options)

    def resolved_resources(self) -> Resources:
        return self.resources or backend_resources(self.role, self.backend)


@dataclass(frozen=True)
class BackendConfig:
    """A whole run's choice of backends (one per role), score thresholds and pipeline settings."""

    backends: Mapping[str, BackendSpec]
    thresholds: Thresholds = field(default_factory=Thresholds)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    source: str = "<defaults>"

    def build(self, role: str) -> Any:
        _check_role(role)
        return self.backends[role].build()

    def resources(self, role: str) -> Resources:
        _check_role(role)
        return self.backends[role].resolved_resources()

    def check(self) -> None:
        """Import every backend class and check its options, so a typo fails before a long run."""
        for spec in self.backends.values():
            check_backend_options(spec.role, spec.backend, spec.options)

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping that :func:`backend_config_from_mapping` turns back into this config."""
        out: dict[str, Any] = {}
        for role, spec in self.backends.items():
            entry: dict[str, Any] = {"backend": spec.backend, **spec.options}
            if spec.resources is not None:
                entry["resources"] = dataclasses.asdict(spec.resources)
            out[role] = entry
        out["thresholds"] = dataclasses.asdict(self.thresholds)
        pipeline = dataclasses.asdict(self.pipeline)
        pipeline["final_frame_indices"] = list(pipeline["final_frame_indices"])
        out["pipeline"] = pipeline
        return out


def _resources_from_mapping(values: Any, where: str) -> Resources:
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping")
    known = {f.name for f in dataclasses.fields(Resources)}
    for key in values:
        if key not in known:
            raise ValueError(f"unknown key {key!r} in {where}; known: {', '.join(sorted(known))}")
    return Resources(**{k: float(v) for k, v in values.items()})


def backend_config_from_mapping(data: Mapping[str, Any], *, source: str = "<mapping>") -> BackendConfig:
    """Validate a parsed config; a role left out uses the ``reference`` backend with no options."""
    if not isinstance(data, Mapping):
        raise ValueError(f"backend config {source} must be a mapping at the top level")
    backends: dict[str, BackendSpec] = {}
    thresholds = Thresholds()
    pipeline = PipelineSettings()
    for key, value in data.items():
        if key == "thresholds":
            thresholds = thresholds_from_mapping(value or {})
        elif key == "pipeline":
            pipeline = settings_from_mapping(value or {})
        elif key in ROLES:
            if isinstance(value, str):  # shorthand: `vlm: reference`
                value = {"backend": value}
            if not isinstance(value, Mapping) or "backend" not in value:
                raise ValueError(f"{source}: role {key!r} needs a mapping with a 'backend' name")
            name = str(value["backend"])
            _check_backend(key, name)
            options = {k: v for k, v in value.items() if k not in RESERVED_KEYS}
            resources = None
            if "resources" in value:
                resources = _resources_from_mapping(value["resources"], f"{key}.resources")
            backends[key] = BackendSpec(key, name, options, resources)
        else:
            known = ", ".join([*ROLES, "thresholds", "pipeline"])
            raise ValueError(f"{source}: unknown key {key!r}; known: {known}")
    for role in ROLES:
        backends.setdefault(role, BackendSpec(role, "reference"))
    return BackendConfig(backends=backends, thresholds=thresholds, pipeline=pipeline, source=source)


def shipped_configs() -> list[str]:
    """Names of the configs that ship with the library (``configs/NAME.yaml``)."""
    folder = importlib_resources.files("sparkle_video.generation") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_backend_config(spec: str | Path) -> BackendConfig:
    """A shipped config by name (``"reference"``) or a user's ``.yaml``/``.yml``/``.toml`` file.

    Unknown roles, backends and keys are refused by name. Backend option keys are checked when the
    backend is built (or by :meth:`BackendConfig.check`), so a model backend's module is not imported
    just to read its config.
    """
    text_spec = str(spec)
    path = Path(text_spec)
    if path.suffix.lower() in (".yaml", ".yml", ".toml") or path.exists():
        if not path.is_file():
            raise ValueError(f"backend config file not found: {text_spec}")
        raw = path.read_bytes()
        source = text_spec
        is_toml = path.suffix.lower() == ".toml"
    else:
        resource = importlib_resources.files("sparkle_video.generation") / "configs" / f"{text_spec}.yaml"
        if not resource.is_file():
            known = ", ".join(shipped_configs())
            raise ValueError(
                f"unknown backend config {text_spec!r}: not a file and not a shipped config ({known})"
            )
        raw = resource.read_bytes()
        source = f"{text_spec} (shipped)"
        is_toml = False
    if is_toml and tomllib is None:  # pragma: no cover
        raise ValueError(f"reading {source} needs Python >= 3.11 or the tomli package")
    try:
        data = tomllib.loads(raw.decode("utf-8")) if is_toml else yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"cannot parse backend config {source}: {e}") from e
    return backend_config_from_mapping(data or {}, source=source)
