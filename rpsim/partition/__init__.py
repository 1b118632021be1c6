"""Stage partitioners: which pipeline layers each stage holds. Pure functions of per-layer costs."""
from rpsim.partition.balanced import balanced_counts, baseline_uneven_counts
from rpsim.partition.counts import fixed_partition, parse_partition_spec, roundpipe_partition
from rpsim.partition.even import even_counts
from rpsim.partition.library_auto import library_timed_partition, library_warmup_partition
from rpsim.partition.roundpipe_auto import LayerTimes, roundpipe_auto

__all__ = [
           "LayerTimes",
           "balanced_counts",
           "baseline_uneven_counts",
           "even_counts",
           "fixed_partition",
           "library_timed_partition",
           "library_warmup_partition",
           "parse_partition_spec",
           "roundpipe_auto",
           "roundpipe_partition",
]
