"""The models wing. The registry (models/registry.py) holds DAM and the baselines; a model in
its own file registers itself when imported, and this package imports them all before any of
its modules is used, so every model is registered, in one order. Adding a model: its file,
and its name in the line below."""

from . import (  # noqa: F401,E402  (their decorators register them)
    cmbs,
    psp,
    registry,  # noqa: F401  (first: the bases the model files subclass)
)
