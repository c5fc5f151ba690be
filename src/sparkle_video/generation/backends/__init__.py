"""Model roles (protocols), the classical reference backends and the registry that picks them by name."""

from .protocols import ROLES, Resources
from .registry import (
    BackendConfig,
    BackendSpec,
    available_backends,
    backend_class,
    backend_resources,
    build_backend,
    load_backend_config,
    register_backend,
)

__all__ = [
    "ROLES",
    "BackendConfig",
    "BackendSpec",
    "Resources",
    "available_backends",
    "backend_class",
    "backend_resources",
    "build_backend",
    "load_backend_config",
    "register_backend",
]
