"""Common subexpression elimination on an aten-level FX graph, before it is imported.

Two nodes that apply the same op to the same arguments compute the same value in a functional
graph (which torch.export and Kiln's torch.compile backend give), so the later one is dropped and
its users read the first. Ops that draw random numbers (tagged ``nondeterministic_seeded``) or
write an argument are never merged, and neither are calls of anything but an aten op or a
``getitem`` of one's results. torch.fx's CSEPass does the merging.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx
from torch.fx.passes.dialect.common.cse_pass import CSEPass

from kiln._logging import logger


def _mergeable(target: Any) -> bool:
    if target is operator.getitem:
        return True
    if not isinstance(target, torch._ops.OpOverload):
        return False
    return torch.Tag.nondeterministic_seeded not in target.tags and not target._schema.is_mutable


def _key(target: Any) -> Any:
    """What CSEPass compares with its banned ops: an overload's packet, else the target."""
    return getattr(target, "overloadpacket", target)


def eliminate_common_subexpressions(gm: fx.GraphModule) -> tuple[fx.GraphModule, int]:
    """The graph with repeated computations merged, and how many nodes were dropped."""
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    # CSEPass bans whole overload packets: a packet with any unmergeable overload is banned.
    banned = {_key(t) for t in targets if not _mergeable(t)}
    banned |= {n.target for n in gm.graph.nodes if n.op in ("call_method", "call_module")}
    try:
        result = CSEPass(banned_ops=banned)(gm)
    except TypeError as error:  # an argument Python cannot hash: nothing to compare it with
        logger.debug("Kiln: no common subexpression elimination (%s)", error)
        return gm, 0
    merged_gm = result.graph_module
    # CSEPass builds a plain Graph: keep the original's calling convention (a pytree codegen).
    merged_gm.graph._codegen = gm.graph._codegen
    merged_gm.recompile()
    merged = len(gm.graph.nodes) - len(merged_gm.graph.nodes)
    return merged_gm, merged
