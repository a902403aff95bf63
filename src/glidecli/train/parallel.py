"""Training on several processes (torchrun): the pieces loop.py needs for data parallelism.

Each rank builds its share of the global batch (data.BatchMaker with a part, render/shard.py's
balanced contiguous runs), runs the network through DistributedDataParallel (NCCL on GPUs,
gloo on the CPU), and scales its summed loss so that the averaged gradients are exactly the
gradient of the global batch's mean loss, whatever the shares' sizes. A run on N processes
therefore takes the steps of a run on one process with the same --batch-size (to float
rounding). Every rank keeps the same weights, optimizer and EMA; only rank 0 writes files.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nets.unet import Text2ImUNet
from ..render.shard import Ranks, share


class Denoiser(nn.Module):
    """The network's training forward pass, text encoder included, as one module, so that
    DistributedDataParallel sees every parameter used inside its forward."""

    def __init__(self, model: Text2ImUNet):
        super().__init__()
        self.model = model

    def forward(self, x_t: Tensor, t: Tensor, tokens: Tensor, mask: Tensor, low_res: Tensor | None, known: dict[str, Tensor]) -> Tensor:
        text = self.model.encode_text(tokens, mask)
        return self.model(x_t, t, text, low_res=low_res, **known)


def data_parallel(forward: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """The module a training step calls (a recipe's training forward: GLIDE's Denoiser),
    wrapped in DDP on several ranks (the process group must be joined; DDP starts every rank
    from rank 0's weights)."""
    if not ranks.launched:
        return forward
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(forward, device_ids=[device] if device.type == "cuda" else None)


def batch_part(batch_size: int, ranks: Ranks) -> range | None:
    """This rank's places in every global batch (None: the whole batch, one process)."""
    return share(batch_size, ranks.rank, ranks.world) if ranks.launched else None


def mean_loss(per_example: Tensor, batch_size: int, ranks: Ranks) -> Tensor:
    """The loss to differentiate. One process: the batch mean. Several: this rank's sum over
    the global batch size, times the world size, because DDP averages the ranks' gradients."""
    if not ranks.launched:
        return per_example.mean()
    return per_example.sum() * (ranks.world / batch_size)


def global_means(sums: dict[str, Tensor], batch_size: int, ranks: Ranks) -> dict[str, float]:
    """Per-rank sums over examples -> means over the global batch (one all-reduce)."""
    stacked = torch.stack([value.detach().float().reshape(()) for value in sums.values()])
    if ranks.launched:
        import torch.distributed as dist

        dist.all_reduce(stacked)
    return {name: float(value) / batch_size for name, value in zip(sums, stacked.cpu())}


def any_rank(flag: bool, ranks: Ranks, device: torch.device) -> bool:
    """True on every rank when `flag` is true on one (all ranks stop at the same step)."""
    if not ranks.launched:
        return flag
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def main_first(ranks: Ranks, before: bool) -> None:
    """Call with before=True at the start of a set-up that writes shared files and with
    before=False at its end: rank 0 runs it first, the others after it is done."""
    if ranks.launched and (before != ranks.is_main):
        import torch.distributed as dist

        dist.barrier()
