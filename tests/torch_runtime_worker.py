"""One rank of a real torch.distributed.pipelining job on CPU (gloo), for tests/test_torch_runtime_interop:
it runs a schedule CSV that rpsim exported through torch's own _PipelineScheduleRuntime and saves the
losses and its stages' gradients. Kept in its own module so spawned processes import it cheaply."""
from __future__ import annotations

import torch
import torch.distributed as dist

from rpsim.export.torch_csv import parse_torch_csv

WIDTH = 8
BATCH = 8


def make_stages(n_stages: int) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.Tanh()) for _ in range(n_stages)]


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, WIDTH, generator=g), torch.randn(BATCH, WIDTH, generator=g)


def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(out, target)


def run_rank(rank: int, world: int, jobs: list[tuple[str, str, int]], init_file: str, out_dir: str,
             n_mb: int) -> None:
    """Run each (name, csv path, stage count) job in one process group (spawning and importing torch
    costs more than the jobs); save rank<r>-<name>.pt with the losses and this rank's gradients."""
    from torch.distributed.pipelining import PipelineStage
    from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name, csv_path, n_stages in jobs:
            with open(csv_path) as f:
                order = parse_torch_csv(f.read())
            mine = sorted({a.stage for a in order.per_gpu[rank]})  # type: ignore[type-var]
            modules = make_stages(n_stages)
            stages = [PipelineStage(modules[s], s, n_stages, torch.device("cpu")) for s in mine]
            schedule = _PipelineScheduleRuntime(stages, n_mb, loss_fn=loss_fn)
            schedule._load_csv(csv_path)
            x, y = batch()
            losses: list[torch.Tensor] = []
            args = (x,) if 0 in mine else ()
            kwargs = {"target": y, "losses": losses} if n_stages - 1 in mine else {}
            schedule.step(*args, **kwargs)
            grads = {f"{s}.{n}": p.grad.clone() for s in mine for n, p in modules[s].named_parameters()}
            torch.save({"losses": [t.detach() for t in losses], "grads": grads}, f"{out_dir}/rank{rank}-{name}.pt")
            dist.barrier()
    finally:
        dist.destroy_process_group()
