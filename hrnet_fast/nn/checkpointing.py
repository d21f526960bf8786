"""Activation checkpointing that leaves BatchNorm's running statistics as one forward pass left them.

``torch.utils.checkpoint`` recomputes a segment's forward during backward. A train-mode BatchNorm in
that segment would then update its running mean and variance a second time with the same batch.
Here the recomputation runs with every BatchNorm's momentum at 0 (the running statistics stay put;
normalization still uses the batch's own statistics, so the recomputed values are identical), and
``num_batches_tracked`` is restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def frozen_bn_statistics(module: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers under ``module`` normalize as usual but record nothing."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def checkpointed(fn: Callable, *args, owner: nn.Module):
    """``fn(*args)``, keeping only its inputs for backward and recomputing the rest (BN-safe)."""
    return checkpoint(
        fn,
        *args,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), frozen_bn_statistics(owner)),
    )
