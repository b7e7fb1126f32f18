"""``torch.export`` programs (``.pt2`` files) as modules the audit can call, put in eval mode and move.

An ``ExportedProgram`` is code-like: :func:`torch.export.load` unpickles parts of the archive
(PyTorch's documentation: "Never load data from an untrusted source") and the graph calls
whatever operators it names. medrobust therefore reads ``.pt2`` files only by suffix or an
explicit ``format="pt2"``, never recognised from the content of another file, as for TorchScript.

The module :meth:`ExportedProgram.module` returns refuses ``.train()``/``.eval()``; its
behaviour (dropout, batch-norm statistics) is the one captured at export time, so export in
eval mode. :class:`ExportedModule` holds it so the surrounding classifier can switch modes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class ExportedModule(nn.Module):
    """Holds the module of an ``ExportedProgram``; ``train()``/``eval()`` leave the program as exported.

    Args:
        program_module: ``exported_program.module()``.
    """

    def __init__(self, program_module: nn.Module) -> None:
        super().__init__()
        self.program = program_module

    def forward(self, x: torch.Tensor) -> Any:
        """Run the exported graph on ``x``."""
        return self.program(x)

    def train(self, mode: bool = True) -> ExportedModule:
        """Record the mode without touching the program (its mode was fixed at export)."""
        self.training = bool(mode)
        return self

    def _apply(self, fn: Any, recurse: bool = True) -> ExportedModule:
        """Also move the program's lifted constants (plain tensor attributes ``.to()`` would miss)."""
        super()._apply(fn, recurse)
        for module in self.program.modules():
            for name, value in list(vars(module).items()):
                if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                    setattr(module, name, fn(value))
        return self


def exported_input_shape(program: Any) -> list[int | None] | None:
    """The shape of the program's single user input, ``None`` for each dynamic dimension.

    Returns:
        The shape, or None when the program does not take exactly one tensor input.
    """
    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        return None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == user_inputs[0]:
            val = node.meta.get("val")
            shape = getattr(val, "shape", None)
            if shape is None:
                return None
            return [int(d) if isinstance(d, int) else None for d in shape]
    return None


@contextlib.contextmanager
def held_back_export_logs() -> Iterator[list[BaseException | str]]:
    """Hold back ``torch.export``'s own log records while loading; yield what they reported.

    :func:`torch.export.load` logs a warning with a traceback when an archive does not
    deserialize, then raises a vaguer error; the caller reports the first held-back reason
    in its own one-line error instead.
    """
    reasons: list[BaseException | str] = []

    def hold(record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        reasons.append(exc if exc is not None else record.getMessage())
        return False

    logger = logging.getLogger("torch.export")
    logger.addFilter(hold)
    try:
        yield reasons
    finally:
        logger.removeFilter(hold)


__all__ = ["ExportedModule", "exported_input_shape", "held_back_export_logs"]
