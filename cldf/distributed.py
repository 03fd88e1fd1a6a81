"""Multi-process training on ``torch.distributed``: process group, collectives and the DDP plug-in.

``cldf run`` started by ``torchrun`` (or with ``--nproc N``) joins the process group described by
torchrun's environment variables (:func:`init_from_env`); every helper here is the identity, or
the single-process answer, when no process group exists, so single-process code paths call them
unconditionally. Backend: gloo for CPU tensors, NCCL for CUDA tensors (both when CUDA exists).

:class:`DistributedPlugin` makes an Avalanche strategy data-parallel: per experience a
``DistributedSampler`` over the training data and a ``DistributedDataParallel`` wrapper over the
model's trainable parameters (rebuilt at each experience, since the trainable set changes, e.g.
when the slow/fast learners swap adapters); evaluation runs on contiguous shards whose
predictions the metric gathers (:func:`gather_cat`), so metrics equal the single-process values.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
import torch.distributed as dist
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def backend() -> str:
    """gloo on CPU; with CUDA, NCCL for CUDA tensors and gloo for CPU tensors."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init_from_env() -> bool:
    """Join the process group torchrun describes in the environment (no-op without it, or when
    already joined). Selects the process's GPU (``LOCAL_RANK``) when CUDA exists. Returns whether
    this process is now part of a process group."""
    if is_distributed():
        return True
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if len(missing) == len(TORCHRUN_VARIABLES):
        return False
    if missing:
        raise RuntimeError(
            f"incomplete torchrun environment: {', '.join(missing)} not set; start with "
            "`torchrun --nproc-per-node N -m cldf run ...` or `cldf run ... --nproc N`"
        )
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    dist.init_process_group(backend=backend())
    return True


def shutdown() -> None:
    """Leave the process group, if any."""
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or no process group): the process that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The element-wise sum of ``tensor`` over all processes (a new tensor); ``tensor`` itself
    when not distributed."""
    if not is_distributed():
        return tensor
    total = tensor.detach().clone().contiguous()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def shard_range(length: int) -> range:
    """This process's contiguous block of ``range(length)``; the blocks of ranks 0..N-1 follow each
    other and cover it exactly once (no padding, sizes differ by at most one)."""
    n, r = world_size(), rank()
    start = r * (length // n) + min(r, length % n)
    return range(start, start + length // n + (1 if r < length % n else 0))


def gather_cat(tensor: Tensor) -> Tensor:
    """Concatenate every process's ``tensor`` along dim 0, in rank order (lengths may differ).

    Run by all processes; all tensors share dtype and trailing shape."""
    if not is_distributed():
        return tensor
    tensor = tensor.contiguous()
    lengths = [torch.zeros((), dtype=torch.int64, device=tensor.device) for _ in range(world_size())]
    dist.all_gather(lengths, torch.tensor(tensor.shape[0], dtype=torch.int64, device=tensor.device))
    longest = int(max(lengths))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n)] for part, n in zip(parts, lengths)])


def average_norm_statistics(model: nn.Module) -> None:
    """Replace the running mean/variance of every BatchNorm layer by its average over processes
    (each process's statistics saw only its share of the batches)."""
    if not is_distributed():
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var):
                buffer.copy_(all_reduce_sum(buffer) / world_size())


class DistributedPlugin(SupervisedPlugin, supports_distributed=True):
    """Data-parallel training and sharded evaluation for an Avalanche strategy under a process group.

    Put it first in ``strategy.plugins``. Per training experience: a ``DistributedSampler``
    (shuffled with ``seed`` + experience index, reshuffled every epoch) replaces the training
    loader, and ``DistributedDataParallel`` wraps ``strategy.model``. Avalanche runs the training
    forward as ``strategy.model(mb_x)``; the plug-in points ``strategy.model`` at the wrapper for
    that call only, so gradients are averaged over processes in ``backward`` while every other
    reader (plug-ins, losses, checkpoints) sees the plain model. Each process holds
    ``training.batch_size`` samples per step, so the effective batch is N times larger. At the end
    of an experience BatchNorm running statistics are averaged. Evaluation runs on this process's
    contiguous shard of each test experience; the metric gathers the predictions.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        if not is_distributed():
            raise RuntimeError("DistributedPlugin needs a process group: call cldf.distributed.init_from_env() first")
        self.seed = seed
        self.wrapper: Optional[DistributedDataParallel] = None
        self._plain: Optional[nn.Module] = None

    def before_training_exp(self, strategy: Any, *args: Any, num_workers: int = 0, **kwargs: Any) -> None:
        dataset = strategy.adapted_dataset
        sampler = DistributedSampler(dataset, shuffle=True, seed=self.seed + strategy.clock.train_exp_counter)
        strategy.dataloader = DataLoader(
            dataset, batch_size=strategy.train_mb_size, sampler=sampler, num_workers=num_workers,
            collate_fn=getattr(dataset, "collate_fn", None), pin_memory=torch.device(strategy.device).type == "cuda",
        )
        device = next(strategy.model.parameters()).device
        self.wrapper = DistributedDataParallel(
            strategy.model, device_ids=[device] if device.type == "cuda" else None,
            forward_sync_buffers=False,
        )

    def before_training_epoch(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        sampler = getattr(strategy.dataloader, "sampler", None)  # a plug-in may bring its own loader
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(strategy.clock.train_exp_epochs)

    def before_forward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self._plain, strategy.model = strategy.model, self.wrapper

    def after_forward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        strategy.model, self._plain = self._plain, None

    def after_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.wrapper = None
        average_norm_statistics(strategy.model)

    def before_eval_exp(self, strategy: Any, *args: Any, num_workers: int = 0, **kwargs: Any) -> None:
        strategy.dataloader, _ = shard_loader(strategy.adapted_dataset, strategy.eval_mb_size, num_workers)


def shard_loader(dataset: Any, batch_size: int, num_workers: int = 0) -> tuple[DataLoader, int]:
    """A loader over this process's contiguous shard of ``dataset`` (all of it without a process
    group), in order, and the shard's first index."""
    shard = shard_range(len(dataset))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=shard, num_workers=num_workers,
                        collate_fn=getattr(dataset, "collate_fn", None))
    return loader, shard.start
