"""When nothing fits: search a few relaxations of the training setup -- LoRA instead of full fine-tuning,
a smaller global batch, a shorter sequence -- and report those that fit, each confirmed by the full
simulator. Each relaxation is a small search (the two smallest microbatch sizes, which need the least
memory; one confirmation)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from rpsim.errors import SpecError
from rpsim.scenario import Scenario
from rpsim.search.run import SearchOptions, search
from rpsim.search.tasks import Confirmed
from rpsim.search.workspace import with_training
from rpsim.specs import TrainingSpec
from rpsim.specs.training import divisors

MIN_SEQ = 512
MAX_FOUND = 2  # stop after this many relaxations fit: the nearest ones are enough advice


@dataclass(frozen=True)
class Relaxation:
    flags: str  # what to change on the command line, e.g. "--mode lora"
    best: Confirmed  # the best plan under it, simulated


def candidate_setups(t: TrainingSpec, n_gpus: int) -> list[tuple[str, TrainingSpec]]:
    """Nearest first: LoRA, then halving the global batch (down to one sequence per GPU), then halving
    the sequence (down to 512 tokens)."""
    out = []
    if t.mode == "full":
        out.append(("--mode lora", replace(t, mode="lora")))
    gb = t.global_batch // 2
    while gb >= n_gpus:
        mb = max(d for d in divisors(gb) if d <= t.mb_size)
        out.append((f"--global-batch {gb}", replace(t, global_batch=gb, mb_size=mb)))
        gb //= 2
    seq = t.seq_len // 2
    while seq >= MIN_SEQ:
        out.append((f"--seq {seq}", replace(t, seq_len=seq)))
        seq //= 2
    return out


def relaxations(sc: Scenario, options: SearchOptions) -> list[Relaxation]:
    found: list[Relaxation] = []
    small = SearchOptions(budget=options.budget, top_k=1, jobs=options.jobs, cluster=options.cluster,
                          seed=options.seed, seeds=0, frontier_extra=0, schedules=options.schedules,
                          reference=False, diagnose=False, fidelity=options.fidelity)
    for flags, training in candidate_setups(sc.training, sc.server.n_gpus):
        try:
            relaxed = with_training(sc, training)
        except SpecError:
            continue
        mbs = tuple(sorted(divisors(training.global_batch))[:2])
        result = search(relaxed, replace(small, mb_sizes=mbs))
        if result.best is not None:
            found.append(Relaxation(flags, result.best))
            if len(found) >= MAX_FOUND:
                break
    return found
