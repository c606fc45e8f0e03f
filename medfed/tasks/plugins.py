"""Parts of a task's model that live in upper layers, found by name: network families and weight loaders.

A task never imports the modules that provide them (``docs/design.md``: tasks sit below ``ssl`` and
``integrations``). It asks this registry instead, which finds a provider the way pandas finds a plotting
backend: first among providers registered in this process (:func:`register`), then among the installed
packages' entry points (:mod:`importlib.metadata`), group by group:

``medfed.networks``
    a network family beyond MONAI's classes: an object with ``plan(model_config, patch_size)``,
    ``build(plan, in_channels, out_channels, seed)`` and ``loss(plan)`` (medfed's own: ``nnunet``, in
    :mod:`medfed.integrations.nnunet.plugin`);
``medfed.weight_loaders``
    ``load(model, path, format)`` putting pretrained encoder weights into a model (medfed's own: ``encoder``,
    :func:`medfed.ssl.checkpoints.load_encoder_checkpoint`).

medfed's providers are declared in its ``pyproject.toml``; another package can add its own the same way.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from medfed.errors import ConfigError

NETWORKS = "medfed.networks"
WEIGHT_LOADERS = "medfed.weight_loaders"

_registered: dict[tuple[str, str], Any] = {}


def register(group: str, name: str, provider: Any) -> None:
    """Make ``provider`` the ``name`` of ``group`` in this process (ahead of installed entry points)."""
    _registered[(group, name)] = provider


def provider(group: str, name: str) -> Any:
    """The provider ``name`` of ``group``; a :class:`ConfigError` naming the known ones when there is none, or
    when loading it fails (an optional extra that is not installed)."""
    if (group, name) in _registered:
        return _registered[(group, name)]
    found = {point.name: point for point in entry_points(group=group)}
    if name not in found:
        known = sorted({n for g, n in _registered if g == group} | set(found))
        raise ConfigError(f"no {group} provider named {name!r} (known: {', '.join(known) or 'none'}); is medfed "
                          "installed (pip install -e .), or register one with medfed.tasks.plugins.register")
    try:
        loaded = found[name].load()
    except ImportError as err:
        raise ConfigError(f"{group} {name!r} needs a package that is not installed ({err}); see its extra, e.g. "
                          f"pip install 'medfed[{name}]'") from None
    _registered[(group, name)] = loaded
    return loaded
