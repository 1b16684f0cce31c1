"""Loading a state dict into a model with every missing / unexpected key reported.

No weight file loads silently partial: what was missing, unused, resampled or dropped is
kept in a `LoadReport` the model carries and the logs show."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from lavis_ib.common.errors import LavisIbError

logger = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What one source filled."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.source}: loaded {len(self.loaded)} tensors"
        if self.missing:
            text += f"; missing {len(self.missing)} (e.g. {', '.join(self.missing[:5])})"
        if self.unexpected:
            text += f"; unexpected {len(self.unexpected)} (e.g. {', '.join(self.unexpected[:5])})"
        return text


def tied_aliases(module: nn.Module) -> dict[str, str]:
    """{alias name: first name} for parameters shared under several names (tied weights)."""
    first: dict[int, str] = {}
    aliases = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
    return aliases


def untie_present(module: nn.Module, present: set[str]) -> list[str]:
    """Give tied parameters their own tensors when a checkpoint holds both names (as
    transformers does: e.g. FlanT5's separate `lm_head`). Returns the untied names."""
    untied = []
    for alias, first in tied_aliases(module).items():
        if alias in present and first in present:
            parent_name, _, leaf = alias.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            old = getattr(parent, leaf)
            setattr(parent, leaf, nn.Parameter(old.detach().clone(), requires_grad=old.requires_grad))
            untied.append(alias)
    if untied:
        logger.info("untied %s: the checkpoint holds them apart from %s", untied,
                    [tied_aliases(module).get(a) for a in untied])
    return untied


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str,
              expected: list[str] | None = None) -> LoadReport:
    """Copy `state` into `module` (non-strict), reporting keys it lacked and keys it had
    that `module` does not know. `expected`: the names the source should have filled
    (default: every parameter and persistent buffer of `module`)."""
    own = module.state_dict()
    aliases = tied_aliases(module)
    report = LoadReport(source)
    usable = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            raise LavisIbError(f"{source}: '{key}' has shape {tuple(value.shape)}, the model "
                             f"expects {tuple(own[key].shape)}; the architecture settings do not match the file.")
        else:
            usable[key] = value
    module.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    filled = set(usable) | {a for a, first in aliases.items() if first in usable}
    filled |= {first for a, first in aliases.items() if a in usable}
    wanted = expected if expected is not None else list(own)
    report.missing = [k for k in wanted if k not in filled]
    logger.info(report.summary())
    return report


def load_in_pieces(module: nn.Module, pieces, source: str) -> LoadReport:
    """`load_into` over an iterable of (state, unused keys) pieces (checkpoint shards), so
    only one shard is in memory at a time; missing keys are computed over all pieces."""
    total = LoadReport(source)
    for state, unused in pieces:
        part = load_into(module, state, source, expected=[])
        total.loaded += part.loaded
        total.unexpected += part.unexpected + list(unused)
    aliases = tied_aliases(module)
    filled = set(total.loaded)
    filled |= {a for a, first in aliases.items() if first in filled}
    filled |= {first for a, first in aliases.items() if a in filled}
    total.missing = [k for k in module.state_dict() if k not in filled]
    logger.info(total.summary())
    return total
