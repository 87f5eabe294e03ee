"""The named parts of a network that fine-tuning loads, re-initialises or freezes.

One mechanism for every network of the zoo (and a user's own, if it follows it):

- the **output layer** is ``net.classifier[-1]``, the ``nn.Linear`` to the tags' logits
  (``output_layer``);
- the **front end** is the submodules a network names in its class attribute
  ``FRONT_END`` (``front_end_names``): the layers that turn raw audio into the first
  feature map (the strided conv and its batch norm of the raw-waveform models, the
  log-mel spectrogram and its batch norm of ``SpectrogramCNN``).

``frozen_modules`` gives the submodules that ``model.freeze`` (``FREEZE``) freezes.
"""

from __future__ import annotations

from torch import nn

from tagger.errors import ConfigError

#: What ``model.freeze`` may name: ``none``; ``front_end`` (the network's ``FRONT_END``);
#: ``all_but_output`` (everything but the output layer: a linear probe).
FREEZE = ("none", "front_end", "all_but_output")

#: Where tagger finds a network's output layer, as written in messages.
OUTPUT_LAYER = "classifier[-1]"


def output_layer(net: nn.Module, needed_by: str = "fine-tuning and model.freeze") -> nn.Linear:
    """The network's output layer, ``net.classifier[-1]`` (an ``nn.Linear``);
    ``ConfigError`` for a network (a trusted module's) that has none, saying that
    ``needed_by`` (what the caller does) needs it."""
    classifier = getattr(net, "classifier", None)
    layer = classifier[-1] if isinstance(classifier, nn.Sequential) and len(classifier) else None
    if not isinstance(layer, nn.Linear):
        raise ConfigError(
            f"the network {type(net).__name__} has no output layer net.{OUTPUT_LAYER} (an "
            f"nn.Linear to the tags' logits), which {needed_by} needs"
        )
    return layer


def output_layer_name(net: nn.Module) -> str:
    """The output layer's module name in ``net`` (``classifier.4``), as its state dict
    prefixes its parameters."""
    layer = output_layer(net)
    return next(name for name, module in net.named_modules() if module is layer)


def front_end_names(net: nn.Module) -> tuple[str, ...]:
    """The submodule names of ``net``'s front end (its class's ``FRONT_END``);
    ``ConfigError`` for a network that names none, or names a submodule it lacks."""
    names = getattr(type(net), "FRONT_END", None)
    if not names or not isinstance(names, tuple):
        raise ConfigError(
            f"model.freeze=front_end: the network {type(net).__name__} does not name its "
            "front end (a class attribute FRONT_END, a tuple of submodule names, as "
            "tagger's networks have); use model.freeze=all_but_output or none"
        )
    modules = dict(net.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise ConfigError(
            f"model.freeze=front_end: {type(net).__name__}.FRONT_END names "
            f"{', '.join(missing)}, which the network does not have"
        )
    return names


def frozen_modules(net: nn.Module, part: str) -> list[tuple[str, nn.Module]]:
    """The submodules of ``net`` that ``model.freeze=part`` freezes, by name, none inside
    another: every parameter below them is frozen, and they run in eval mode.

    ``all_but_output``: every submodule that neither holds nor is inside the output layer.
    """
    if part not in FREEZE:
        raise ConfigError(f"model.freeze must be one of {', '.join(FREEZE)}, not {part!r}")
    if part == "none":
        return []
    modules = dict(net.named_modules())
    if part == "front_end":
        return [(name, modules[name]) for name in front_end_names(net)]
    head = output_layer_name(net)
    chosen: list[tuple[str, nn.Module]] = []
    for name, module in modules.items():
        if not name or name == head or head.startswith(f"{name}.") or name.startswith(f"{head}."):
            continue  # the network itself, the output layer, what holds it, what is in it
        if any(name.startswith(f"{outer}.") for outer, _ in chosen):
            continue  # inside one already chosen
        chosen.append((name, module))
    return chosen
