"""rpsim's exported zero-bubble schedules run under torch's own pipelining runtime: a real two-process
gloo job on CPU executes the CSV `rpsim export --torch-csv` writes (ZB-V's V-shaped placement with
split I / W, ZB-H1, and DualPipeV's overlapped pairs) through _PipelineScheduleRuntime, and its losses
and gradients equal a single-process reference of the same model and microbatches."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.multiprocessing as mp

from rpsim.export.torch_csv import to_torch_csv
from rpsim.ir import Partition
from rpsim.schedules import get_schedule
from rpsim.schedules.base import BuildOptions
from tests import torch_runtime_worker as worker

WORLD = 2


def _reference(n_stages: int, n_mb: int) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """The same stages in one process: each microbatch's loss, and gradients of their mean (torch's
    runtime scales gradients by 1 / n_microbatches)."""
    modules = worker.make_stages(n_stages)
    x, y = worker.batch()
    losses = []
    for xs, ys in zip(x.chunk(n_mb), y.chunk(n_mb), strict=True):
        out = xs
        for m in modules:
            out = m(out)
        loss = worker.loss_fn(out, ys)
        (loss / n_mb).backward()
        losses.append(loss.detach())
    grads = {f"{s}.{n}": p.grad for s, m in enumerate(modules) for n, p in m.named_parameters()}
    return losses, grads


SCHEDULES = ("zbv", "zb-h1", "dualpipev")  # V placement with I / W; one stage per rank; overlapped pairs
N_MB = 4


def test_exported_csvs_run_in_torch_runtime_and_match_reference(tmp_path):
    jobs = []
    for name in SCHEDULES:
        v = get_schedule(name).TRAITS.virtual_stages.resolve(None, 1)
        n_stages = WORLD * v
        plan = get_schedule(name).build(WORLD, Partition.same(tuple((s, s + 1) for s in range(n_stages))), N_MB,
                                        BuildOptions(virtual_stages=v))
        csv_path = tmp_path / f"{name}.csv"
        csv_path.write_text(to_torch_csv(plan))
        jobs.append((name, str(csv_path), n_stages))
    mp.start_processes(worker.run_rank, args=(WORLD, jobs, str(tmp_path / "init"), str(tmp_path), N_MB),
                       nprocs=WORLD, start_method="spawn")
    for name, _, n_stages in jobs:
        results = [torch.load(tmp_path / f"rank{r}-{name}.pt") for r in range(WORLD)]
        losses = [t for r in results for t in r["losses"]]
        grads = {k: g for r in results for k, g in r["grads"].items()}
        ref_losses, ref_grads = _reference(n_stages, N_MB)
        assert len(losses) == N_MB, name
        torch.testing.assert_close(torch.stack(losses), torch.stack(ref_losses), msg=name)
        assert set(grads) == set(ref_grads), name
        for k in ref_grads:
            torch.testing.assert_close(grads[k], ref_grads[k], msg=f"{name} {k}")
