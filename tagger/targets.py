"""The gate between files and code: which ``_target_`` a config read from a file may name.

A checkpoint (or any other file tagger reads) is data. The configs stored in it name the
classes that rebuild the model and its data (``_target_``), and ``hydra.utils.instantiate``
would import and call whatever they name. So every config read from a file passes
``check_stored_config`` first: each ``_target_`` anywhere in it is compared, as a string,
with an allowlist before anything is imported:

- tagger's own networks and data modules, at the places they are built from
  (``NETWORKS``, ``DATA_MODULES``);
- ``torch.optim``'s optimizers and learning-rate schedulers, as factories
  (``_partial_: true``);
- the other classes of tagger's own configs (``conf/``), which are recorded but never built
  from a file (``RECORDED``);
- any class of a module the user trusts by name on the command line
  (``trusted_modules=[my_models]`` for ``eval.py``, ``--trust-module my_models`` for the
  ``tagger`` commands), for networks of their own.

A ``_target_`` somewhere else (nested in a network's arguments, say), ``_args_`` or any
other of Hydra's ``_keys_`` apart from ``_partial_`` on a factory, and ``${...}``
interpolations (which resolvers would evaluate) are refused too. ``tests/test_targets.py``
plants a target at every node of a real checkpoint and runs every command on it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch

from tagger.errors import ConfigError

#: Networks a checkpoint's ``net`` may name (every ``conf/model/*.yaml``'s network).
NETWORKS = frozenset({
    "tagger.models.dieleman.DielemanCNN",
    "tagger.models.hybrid.HybridCNN",
    "tagger.models.rese.ReSE2",
    "tagger.models.samplecnn.SampleCNN",
    "tagger.models.spectrogram.SpectrogramCNN",
})  # fmt: skip

#: Data modules a stored run config's ``data`` may name (every ``conf/data/*.yaml``).
DATA_MODULES = frozenset({
    "tagger.data.coursework.CourseworkDataModule",
    "tagger.data.store_data.StoreDataModule",
    "tagger.data.synthetic.SyntheticDataModule",
})  # fmt: skip


def _torch_classes(module: Any, *bases: type) -> frozenset[str]:
    """``module.Name`` for each public class of ``module`` deriving from one of ``bases``."""
    return frozenset(
        f"{module.__name__}.{name}"
        for name, value in vars(module).items()
        if not name.startswith("_")
        and inspect.isclass(value)
        and issubclass(value, bases)
        and value not in bases
    )


#: ``torch.optim``'s optimizers (``conf/optimizer``).
OPTIMIZERS = _torch_classes(torch.optim, torch.optim.Optimizer)
#: ``torch.optim.lr_scheduler``'s schedulers (``conf/scheduler``).
SCHEDULERS = _torch_classes(
    torch.optim.lr_scheduler,
    torch.optim.lr_scheduler.LRScheduler,
    torch.optim.lr_scheduler.ReduceLROnPlateau,
)

#: Classes that tagger's configs name and a run config records, but that nothing builds
#: from a file: allowed where a stored run config has them, never instantiated from it.
RECORDED = frozenset({
    "tagger.module.TaggingModule",
    "tagger.augment.Augment",
    "tagger.callbacks.LastCheckpoint",
    "tagger.callbacks.StepLog",
    "tagger.dashboards.TensorBoardDashboards",
    "tagger.checkpoint_io.AtomicCheckpointIO",
    "lightning.pytorch.trainer.Trainer",
    "lightning.pytorch.callbacks.EarlyStopping",
    "lightning.pytorch.callbacks.LearningRateMonitor",
    "lightning.pytorch.callbacks.ModelCheckpoint",
    "lightning.pytorch.callbacks.TQDMProgressBar",
    "lightning.pytorch.loggers.CSVLogger",
    "lightning.pytorch.loggers.TensorBoardLogger",
    "lightning.fabric.plugins.environments.SLURMEnvironment",
})  # fmt: skip

#: What each built node of a stored config may name, and whether it is a factory.
#: (role, allowed targets, ``_partial_: true`` required)
ROLES: dict[str, tuple[frozenset[str], bool]] = {
    "net": (NETWORKS, False),
    "optimizer": (OPTIMIZERS, True),
    "scheduler": (SCHEDULERS, True),
    "data": (DATA_MODULES, False),
}

#: The hyperparameters tagger's ``TaggingModule`` stores, and nothing else.
HPARAM_KEYS = frozenset({"net", "optimizer", "scheduler", "tag_names", "aggregation",
                         "input_scale"})  # fmt: skip


class UnsafeConfigError(ConfigError):
    """A config read from a file names code tagger will not run."""


def _trusted(target: str, trusted_modules: Sequence[str]) -> bool:
    return any(target == m or target.startswith(f"{m}.") for m in trusted_modules if m)


def _nodes(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every (dotted place, value) in a tree of dicts and lists, the root first."""
    yield where, node
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _nodes(value, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _nodes(value, f"{where}[{i}]")


def _trust_hint() -> str:
    return (
        "tagger builds only its own networks and data modules and torch.optim from a file; "
        "if you wrote that code and trust this file, name its module: "
        "--trust-module MODULE (tagger commands) or trusted_modules=[MODULE] (eval.py)"
    )


def check_built_node(
    node: Any, role: str, where: str, source: str, trusted_modules: Sequence[str] = ()
) -> None:
    """Refuse a node that will be built (``role`` of ``ROLES``) unless its ``_target_`` is
    allowed there and nothing below it names code.

    Raises ``UnsafeConfigError`` naming ``source`` (the file) and ``where`` (the place).
    """
    allowed, factory = ROLES[role]
    if not isinstance(node, Mapping) or not isinstance(node.get("_target_"), str):
        raise UnsafeConfigError(f"{source}: {where} is not a config with a _target_ string")
    target = node["_target_"]
    if target not in allowed and not _trusted(target, trusted_modules):
        raise UnsafeConfigError(
            f"{source}: {where} names {target!r}, which is not one of tagger's {role} "
            f"classes; {_trust_hint()}"
        )
    special = {k for k in node if isinstance(k, str) and k.startswith("_") and k.endswith("_")}
    expected = {"_target_", "_partial_"} if factory else {"_target_"}
    if special - expected:
        raise UnsafeConfigError(
            f"{source}: {where} has {', '.join(sorted(special - expected))}, which tagger "
            "never stores; refusing the file"
        )
    if factory and node.get("_partial_") is not True:
        raise UnsafeConfigError(f"{source}: {where} must be a factory (_partial_: true)")
    for place, value in _nodes(node, where):
        if place == where:
            continue
        _check_plain(value, place, source)


def _check_plain(value: Any, where: str, source: str) -> None:
    """Refuse Hydra's keys in a dict and ``${...}`` in a string (one node, not below it)."""
    if isinstance(value, Mapping):
        keys = [k for k in value if isinstance(k, str) and k.startswith("_") and k.endswith("_")]
        if keys:
            raise UnsafeConfigError(
                f"{source}: {where} has {keys[0]}, where tagger stores plain values only; "
                "refusing the file"
            )
        if any(not isinstance(k, str) for k in value):
            raise UnsafeConfigError(f"{source}: {where} has a key that is not a string")
    elif isinstance(value, str) and "${" in value:
        raise UnsafeConfigError(
            f"{source}: {where} holds an interpolation ({value[:40]!r}); tagger stores "
            "resolved values only, refusing the file"
        )


def check_stored_config(
    config: Any, source: str, trusted_modules: Sequence[str] = (), where: str = "config"
) -> None:
    """Refuse a run config read from a file (a checkpoint's ``config``, a sweep's
    ``config.yaml``) in which any ``_target_`` is not allowed where it stands.

    The places tagger builds from (``data``, ``model.net``, ``optimizer``, ``scheduler``)
    are checked as ``check_built_node`` does; every other ``_target_`` must be one that
    tagger's configs record (``RECORDED``) or a trusted module's.
    """
    if not isinstance(config, Mapping):
        raise UnsafeConfigError(f"{source}: {where} is not a mapping")
    built = {
        f"{where}.data": "data",
        f"{where}.model.net": "net",
        f"{where}.optimizer": "optimizer",
    }
    if config.get("scheduler") is not None:
        built[f"{where}.scheduler"] = "scheduler"
    inside_built: list[str] = []
    for place, value in _nodes(config, where):
        if place in built:
            check_built_node(value, built[place], place, source, trusted_modules)
            inside_built.append(place)
            continue
        if any(place.startswith((f"{b}.", f"{b}[")) for b in inside_built):
            continue  # checked with its node
        _check_recorded(value, place, source, trusted_modules)


def _check_recorded(value: Any, where: str, source: str, trusted_modules: Sequence[str]) -> None:
    """A node outside the built ones: plain, or a recorded class with plain arguments."""
    if isinstance(value, Mapping) and "_target_" in value:
        target = value["_target_"]
        allowed = set(RECORDED) | NETWORKS | DATA_MODULES | OPTIMIZERS | SCHEDULERS
        if not isinstance(target, str) or (
            target not in allowed and not _trusted(target, trusted_modules)
        ):
            raise UnsafeConfigError(
                f"{source}: {where} names {target!r}, which tagger's configs never name; "
                f"{_trust_hint()}"
            )
        extra = {
            k for k in value
            if isinstance(k, str) and k.startswith("_") and k.endswith("_")
        } - {"_target_", "_partial_"}  # fmt: skip
        if extra:
            raise UnsafeConfigError(
                f"{source}: {where} has {', '.join(sorted(extra))}, which tagger never "
                "stores; refusing the file"
            )
        return
    _check_plain(value, where, source)


def check_hyperparameters(
    hparams: Any, source: str, trusted_modules: Sequence[str] = ()
) -> dict[str, Any]:
    """The ``TaggingModule`` arguments stored in a checkpoint, checked: exactly the known
    keys, each of its type and range, and only allowed code in ``net``, ``optimizer`` and
    ``scheduler``. Raises ``UnsafeConfigError`` (code) or ``ConfigError`` naming ``source``."""
    if not isinstance(hparams, Mapping):
        raise ConfigError(f"{source}: its hyper_parameters are not a mapping")
    keys = set(hparams)
    if keys != HPARAM_KEYS:
        odd = sorted(map(str, keys ^ HPARAM_KEYS))
        raise ConfigError(
            f"{source}: its hyper_parameters are not tagger's (unexpected or missing: "
            f"{', '.join(odd)}); use a checkpoint written by tagger's train.py"
        )
    check_built_node(hparams["net"], "net", "hyper_parameters.net", source, trusted_modules)
    check_built_node(hparams["optimizer"], "optimizer", "hyper_parameters.optimizer", source,
                     trusted_modules)  # fmt: skip
    if hparams["scheduler"] is not None:
        check_built_node(hparams["scheduler"], "scheduler", "hyper_parameters.scheduler",
                         source, trusted_modules)  # fmt: skip
    tags = hparams["tag_names"]
    if (
        not isinstance(tags, list)
        or not tags
        or not all(isinstance(t, str) and t for t in tags)
        or len(set(tags)) != len(tags)
    ):
        raise ConfigError(f"{source}: hyper_parameters.tag_names is not a list of distinct names")
    scale = hparams["input_scale"]
    if not _positive_number(scale):
        raise ConfigError(f"{source}: hyper_parameters.input_scale must be a positive number")
    if not isinstance(hparams["aggregation"], str):
        raise ConfigError(f"{source}: hyper_parameters.aggregation is not a name")
    return dict(hparams)


def _positive_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0 < value < math.inf
    )


def check_stored_data(data: Any, source: str) -> None:
    """A stored data config's sample rate and window: positive whole numbers (they size
    every read and the exported model's input)."""
    for key in ("sample_rate", "subclip_len"):
        value = data.get(key) if isinstance(data, Mapping) else None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**31:
            raise ConfigError(
                f"{source}: config.data.{key} must be a positive whole number, not {value!r}"
            )


def module_names(names: Iterable[str] | str) -> tuple[str, ...]:
    """Trusted module names as given on a command line (one name or a list), checked to be
    dotted identifiers."""
    out = []
    for name in [names] if isinstance(names, str) else names:
        if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".")):
            raise ConfigError(
                f"--trust-module / trusted_modules take module names such as my_models, "
                f"not {name!r}"
            )
        out.append(name)
    return tuple(out)
