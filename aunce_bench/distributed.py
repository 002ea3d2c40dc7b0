"""Building blocks of multi-process training under torchrun with DistributedDataParallel.

One process per device: gloo on CPU, nccl on CUDA. Every rank takes a contiguous slice of the global batch;
the contrastive losses see the global batch through :func:`gather_with_grad`, and BatchNorm computes its
statistics over the global batch (:func:`sync_batchnorm`), so a step on W processes computes the loss and
gradients of the same step on one process.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "DistributedEnv",
    "GlobalBatchNorm",
    "agree",
    "destroy_process_group",
    "gather",
    "gather_with_grad",
    "init_process_group",
    "is_writer",
    "joined",
    "mean_over_ranks",
    "rank_slice",
    "sync_batchnorm",
    "wrap_ddp",
]


# How long a rank waits for the others: long enough for rank 0 to build a SynthFace backbone on a CPU before the
# first run (the others wait for its decision to run it); torchrun ends every rank when one dies.
COLLECTIVE_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class DistributedEnv:
    """This process's place among the processes torchrun launched."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_environment(cls) -> DistributedEnv | None:
        """The environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK); None when not launched by torchrun."""
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return None
        return cls(
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )


def _world_size() -> int:
    """The size of the default process group; 1 when none is initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@contextmanager
def _collectives_deprecation_silenced() -> Iterator[None]:
    """torch.distributed.nn.functional, the autograd collectives used here, warns of its deprecation on every rank."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"torch\.distributed\.nn\.functional\.", FutureWarning)
        yield


def init_process_group(device: torch.device | str, init_method: str | None = None) -> DistributedEnv | None:
    """Join the default process group of the torchrun launch; None (and nothing done) outside torchrun.

    The backend is nccl for a CUDA ``device`` and gloo otherwise; on CUDA the current device becomes
    cuda:LOCAL_RANK, the device this process must train on. ``init_method`` defaults to torchrun's env://.
    """
    env = DistributedEnv.from_environment()
    if env is None:
        return None
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(
        "nccl" if cuda else "gloo", init_method=init_method, rank=env.rank, world_size=env.world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    return env


def joined() -> DistributedEnv | None:
    """This process's place in a process group of more than one rank; None outside one."""
    env = DistributedEnv.from_environment()
    return env if env is not None and _world_size() > 1 else None


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over the ranks (all-reduced, no gradient); `value` itself on one process."""
    if _world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / _world_size()


def agree(value):
    """Rank 0's `value`, on every rank (a picklable object); `value` itself on one process."""
    if _world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def destroy_process_group() -> None:
    """Leave the default process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_writer(env: DistributedEnv | None = None) -> bool:
    """Whether this process writes results and checkpoints: rank 0, or any process outside torchrun.

    ``env`` defaults to :meth:`DistributedEnv.from_environment`.
    """
    env = env if env is not None else DistributedEnv.from_environment()
    return env is None or env.rank == 0


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward passes the gradient on as a contiguous tensor.

    Under gloo the backward of ``dist_nn.all_gather`` scatters the gradients into buffers laid out like them
    (``torch.empty_like``), and gloo's scatter fills non-contiguous buffers as if they were contiguous
    (pytorch/pytorch#192920): the transposed gradient of the AUNCE loss came back permuted.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order, differentiable; identity on one process.

    The backward of the all-gather sums each slice's gradient over the ranks (a reduce-scatter), so with
    the same loss on every rank and DDP's gradient averaging, parameters get the gradient of that loss.
    """
    if _world_size() == 1:
        return tensor
    with _collectives_deprecation_silenced():
        parts = dist_nn.all_gather(tensor)
    return torch.cat([_ContiguousGrad.apply(part) for part in parts])


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order, without gradient (labels)."""
    if _world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def rank_slice(global_batch_size: int, env: DistributedEnv | None) -> slice:
    """The rows [r B/W, (r+1) B/W) of a global batch of B rows that rank r of W takes (all rows outside torchrun)."""
    if env is None:
        return slice(0, global_batch_size)
    if global_batch_size % env.world_size:
        raise ValueError(
            f"the global batch size {global_batch_size} is not divisible by the number of processes "
            f"{env.world_size}: choose a batch size that is a multiple of {env.world_size}"
        )
    local = global_batch_size // env.world_size
    return slice(env.rank * local, (env.rank + 1) * local)


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm (any of 1d, 2d, 3d) whose training statistics are those of the global batch over all ranks.

    The counterpart of :class:`torch.nn.SyncBatchNorm` for CPU processes (gloo): in training mode under a
    process group of more than one rank, the per-channel sum, sum of squares and count are all-reduced with
    autograd (float32), the input is normalised with the global mean and biased variance, and the running
    statistics are updated as :class:`torch.nn.BatchNorm2d` updates them (unbiased variance, ``momentum``,
    or a cumulative average when it is None). Otherwise it is exactly the BatchNorm it replaces. Parameters,
    buffers and state_dict keys are those of the torch BatchNorm modules.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    @classmethod
    def from_batchnorm(cls, bn: _BatchNorm) -> GlobalBatchNorm:
        """A GlobalBatchNorm sharing ``bn``'s parameters and buffers (as SyncBatchNorm's conversion does)."""
        module = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        module.weight, module.bias = bn.weight, bn.bias
        module.running_mean, module.running_var = bn.running_mean, bn.running_var
        module.num_batches_tracked = bn.num_batches_tracked
        module.train(bn.training)
        return module

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or _world_size() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        shape = [1, -1] + [1] * (input.dim() - 2)
        with torch.autocast(input.device.type, enabled=False):
            x = input.float()
            dims = [0, *range(2, x.dim())]
            local_count = x.new_full((1,), x.numel() // x.shape[1])
            with _collectives_deprecation_silenced():
                stats = dist_nn.all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), local_count]))
            total, total_sq, count = stats[: self.num_features], stats[self.num_features: -1], stats[-1]
            if count.item() < 2:
                raise ValueError(f"Expected more than 1 value per channel when training, got {int(count.item())} "
                                 "over the global batch")
            mean = total / count
            var = (total_sq / count - mean * mean).clamp(min=0)  # biased: BatchNorm normalises with it
            out = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
            if self.weight is not None:
                out = out * self.weight.float().view(shape)
            if self.bias is not None:
                out = out + self.bias.float().view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * count / (count - 1))
        return out.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        """The update of torch's BatchNorm in training mode, with the global batch statistics."""
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased_var.to(self.running_var.dtype), alpha=factor)


def _to_global_batchnorm(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        return GlobalBatchNorm.from_batchnorm(module)
    for name, child in module.named_children():
        module.add_module(name, _to_global_batchnorm(child))
    return module


def sync_batchnorm(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model`` with every BatchNorm computing training statistics over the global batch of all ranks.

    On CUDA the BatchNorms become :class:`torch.nn.SyncBatchNorm` (which runs on GPUs only), elsewhere
    :class:`GlobalBatchNorm`; both share the replaced modules' parameters and buffers, and both behave as
    plain BatchNorm in eval mode or without a process group. Converts in place; returns the model (a new
    module when ``model`` itself is a BatchNorm).
    """
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global_batchnorm(model)


def wrap_ddp(module: nn.Module, env: DistributedEnv | None, device: torch.device | str) -> nn.Module:
    """``module`` in DistributedDataParallel under a launch of several processes, else ``module`` itself.

    Only calls through the wrapper's forward synchronise gradients: wrap a module whose forward is the
    computation to train (e.g. one calling ``encoder.embed``).
    """
    if env is None or env.world_size == 1:
        return module
    device_ids = [env.local_rank] if torch.device(device).type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)
