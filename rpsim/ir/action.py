"""`Action`: one unit of work on one lane, with a text form that parses back exactly.

Text grammar (torch pipelining's `2F0` extended with dotted fields):

    [stage] KIND [mb] { "." field }      field := p(F|B) | i<iter> | c<layer> | g<peer gpu>

    3F5          forward of stage 3, microbatch 5 (iteration 0 is implied)
    3B5.i1       backward of stage 3, microbatch 5, iteration 1
    7FB2         RoundPipe's fused forward+backward of the last stage
    3LOAD4.pF.c9 upload layer 9's weights of forward stage 3, for the job that starts at microbatch 4
    3ACT_OUT5.pF download the output (and saved inputs) of 3F5 to host memory
    3SEND5.pF.g2 send 3F5's output to GPU 2 over P2P; its partner is 4RECV5.pF.g1 on GPU 2
    3STEP.pB.c9  CPU optimizer step of layer 9 (in backward stage 3)

`phase` says which partition a transfer's `stage` indexes (F: forward stages, B: backward stages).
For LOAD / OFFLOAD / FREE, `mb` is the first microbatch of the stage job the transfer serves.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from rpsim.errors import PlanError

# Kind sets, in one place: every module that asks "is this a backward / a timed transfer" reads these.
COMPUTE_KINDS = ("F", "B", "FB", "I", "W")
BACKWARD_KINDS = ("B", "FB", "I", "W")  # compute over a backward stage (the B partition)
INPUT_GRAD_KINDS = ("B", "FB", "I")  # produce a stage's input gradient (and end its saved-input lifetime)
WEIGHT_GRAD_KINDS = ("B", "FB", "W")  # produce a stage's weight gradients (the optimizer waits on them)
TRANSFER_KINDS = ("LOAD", "OFFLOAD", "ACT_OUT", "ACT_IN", "SEND", "RECV")
MOVING_KINDS = ("LOAD", "OFFLOAD", "ACT_OUT", "ACT_IN", "SEND")  # transfers that move bytes (RECV waits)
UPLOAD_KINDS = ("LOAD", "ACT_IN")  # host -> GPU
KINDS = COMPUTE_KINDS + TRANSFER_KINDS + ("STEP", "FREE")
PHASES = ("F", "B")

_TEXT_RE = re.compile(r"^(?P<stage>\d+)?(?P<kind>[A-Z_]+?)(?P<mb>\d+)?(?P<fields>(?:\.[a-z][A-Za-z0-9]*)*)$")
_FIELD_RE = re.compile(r"^(?P<key>[picg])(?P<value>[A-Z]|\d+)$")


_KIND_SET = frozenset(KINDS)
_COMPUTE_SET = frozenset(COMPUTE_KINDS)
_INT_FIELDS = ("stage", "mb", "chunk", "peer", "it")


# init=False: the hand-written __init__ below stores the fields straight into the instance dict. Lowering a
# 64-GPU plan builds ~10^6 actions, and the generated frozen __init__ (one object.__setattr__ per field)
# plus the field checks were a fifth of make_plan. The checks are the same; only their cost changed.
@dataclass(frozen=True, order=True, init=False)
class Action:
    kind: str
    stage: int | None = None
    mb: int | None = None
    it: int = 0
    phase: str | None = None
    chunk: int | None = None  # pipeline-layer index of a per-layer piece (LOAD, OFFLOAD, STEP)
    peer: int | None = None  # the other GPU of a SEND / RECV

    def __init__(self, kind: str, stage: int | None = None, mb: int | None = None, it: int = 0,
                 phase: str | None = None, chunk: int | None = None, peer: int | None = None) -> None:
        d = self.__dict__
        d["kind"], d["stage"], d["mb"], d["it"], d["phase"], d["chunk"], d["peer"] = (
            kind, stage, mb, it, phase, chunk, peer)
        if kind not in _KIND_SET:
            raise PlanError(f"unknown action kind {kind!r}; valid choices: {', '.join(KINDS)}")
        if phase is not None and phase not in PHASES:
            raise PlanError(f"action phase {phase!r} unknown; valid choices: F, B")
        # The common case in one expression: exact ints (no bools), non-negative, or None.
        if not (type(it) is int and it >= 0 and (stage is None or (type(stage) is int and stage >= 0))
                and (mb is None or (type(mb) is int and mb >= 0))
                and (chunk is None or (type(chunk) is int and chunk >= 0))
                and (peer is None or (type(peer) is int and peer >= 0))):
            self._check_int_fields()
        if kind in _COMPUTE_SET and (stage is None or mb is None):
            raise PlanError(f"compute action {kind} needs a stage and a microbatch")
        # Actions are graph nodes hashed millions of times: compute the hash once.
        d["_hash"] = hash((kind, stage, mb, it, phase, chunk, peer))

    def _check_int_fields(self) -> None:
        # `it` too, and no bools: Action(it=-1) or Action(stage=True) printed text ("F0.i-1", "TrueF0")
        # that parse_action rejects, breaking the text round-trip plan.json relies on.
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise PlanError(f"action {name} must be a non-negative integer, got {v!r}")

    def __reduce__(self) -> tuple:
        # Rebuilt through __init__, never from the pickled dict: the cached hash of its strings is only
        # valid in the process that computed it (string hashes are salted per process).
        return (Action, (self.kind, self.stage, self.mb, self.it, self.phase, self.chunk, self.peer))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined,no-any-return]

    @property
    def is_compute(self) -> bool:
        return self.kind in COMPUTE_KINDS

    @property
    def partition_phase(self) -> str:
        """Which partition `stage` indexes: forward stages for F, backward stages for B/FB/I/W."""
        if self.kind == "F":
            return "F"
        if self.kind in BACKWARD_KINDS:
            return "B"
        return self.phase or "F"

    def __str__(self) -> str:
        s = "" if self.stage is None else str(self.stage)
        s += self.kind + ("" if self.mb is None else str(self.mb))
        if self.phase is not None:
            s += f".p{self.phase}"
        if self.chunk is not None:
            s += f".c{self.chunk}"
        if self.peer is not None:
            s += f".g{self.peer}"
        if self.it:
            s += f".i{self.it}"
        return s


def parse_action(text: str) -> Action:
    m = _TEXT_RE.match(text.strip())
    if not m or m["kind"] not in KINDS:
        raise PlanError(f"cannot parse action {text!r}; grammar: [stage]KIND[mb]{{.pF|.pB|.cN|.gN|.iN}}, "
                        f"KIND one of {', '.join(KINDS)}")
    values: dict[str, object] = {}
    for part in filter(None, m["fields"].split(".")):
        f = _FIELD_RE.match(part)
        if not f:
            raise PlanError(f"action {text!r}: bad field {part!r}")
        key = {"p": "phase", "i": "it", "c": "chunk", "g": "peer"}[f["key"]]
        values[key] = f["value"] if key == "phase" else int(f["value"])
    stage = int(m["stage"]) if m["stage"] is not None else None
    mb = int(m["mb"]) if m["mb"] is not None else None
    return Action(kind=m["kind"], stage=stage, mb=mb, **values)  # type: ignore[arg-type]
