"""Bad inputs of `wm`, drawn by hypothesis: option values, seeds, devices, ports, sizes, rules
between options, stray tokens, and damage to a run folder's config.json, checkpoint and data.npz,
and injected file-system errors (disk full, read-only, no permission).

A `Case` is an argv with placeholders ({runs}: a fresh runs folder, {run}: a copy of a prepared
run folder, {file}: a regular file, {port}: a port something listens on), the run folder it
copies, what is done to that copy first, and the fault injected while it runs. `fuzz_inputs.py`
runs them; `tests/test_fuzz_inputs.py` asserts on a few of each class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from agents.configurator.config import Config
from agents.configurator.fields import flat_fields

# Options of a tiny run (seconds, not minutes), which a drawn option replaces.
TINY_TRAIN = {
    "steps": "300", "train.max_steps": "10", "train.eval_every": "5", "train.horizon": "5",
    "model.hidden": "16", "train.batch_size": "16", "threads": "1", "device": "cpu",
}  # fmt: skip
TINY_RUN = TINY_TRAIN | {
    "loop.seed_steps": "200", "loop.first_train_steps": "5", "loop.train_steps": "5",
    "loop.eval_episodes": "1", "planner.horizon": "3", "planner.iterations": "1",
    "planner.candidates": "1", "planner.population": "8", "planner.elites": "2",
    "policy.updates": "1", "policy.batch_size": "16", "policy.horizon": "3",
}  # fmt: skip
FLAGS = ("--no-progress", "--no-video")
FIELDS = flat_fields(Config)
# Options whose every value is drawn elsewhere, or that only switch output on.
_OWN_CLASS = {"seed", "device", "runs_dir", "progress", "video"}
SIZES = {  # options memory grows with, and what they need beside them
    "train": {
        "train.batch_size": {}, "model.hidden": {}, "model.layers": {}, "model.latent_dim": {},
        "steps": {},
    },
    "run": {
        "planner.population": {"planner.kind": "cem"}, "planner.latent_samples": {},
        "planner.candidates": {}, "policy.batch_size": {"agent": "policy"},
        "policy.horizon": {"agent": "policy"}, "policy.uncertainty_masks": {"agent": "policy"},
        "loop.capacity": {"steps": "1000000000000"},
    },
}  # fmt: skip
READERS = (("eval-model", "{run}"), ("dream", "{run}", "--steps", "5", "--no-video"))
MPC = ("mpc", "{run}", "--episodes", "1", "--device", "cpu")
RESUMES = {"train": ("train", "--resume", "{run}"), "run": ("run", "--resume", "{run}")}


@dataclass(frozen=True)
class Fault:
    """An OSError injected into the file system while the command runs."""

    target: str  #: 'fsync', 'replace' (atomic writes), 'mkdir', 'events' (TensorBoard), 'read'
    code: int  #: its errno
    after: int  #: calls of the target that succeed first


@dataclass(frozen=True)
class Case:
    """One bad input."""

    kind: str  #: its class (a row of the benchmark's CSV)
    argv: tuple[str, ...]
    source: str | None = None  #: the prepared run folder '{run}' copies: 'train', 'run', ...
    damage: Callable[[Path], None] | None = field(default=None, compare=False)
    what: str = ""  #: the damage, in words (shown for a failing case)
    fault: Fault | None = None


def fresh(command: str, options: dict[str, str], extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """argv of a tiny new run of `command` with `options` over the tiny ones."""
    merged = (TINY_RUN if command == "run" else TINY_TRAIN) | options
    tokens = [token for key, value in merged.items() for token in (f"--{key}", value)]
    return (command, "--runs_dir", "{runs}", *tokens, *FLAGS, *extra)


# --- values ---------------------------------------------------------------------------------------

ODD_TEXT = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12
)
BAD_NUMBERS = st.sampled_from(
    ["ten", "", " ", "1e", "0x10", "1,5", "--", "٣", "1_0", "nan", "inf", "-inf", "1e400",
     "-1e400", "1.5", "-0", "+3", "½", "NaN", "0.0", "1e-400", "true", "None", "[1]"]
)  # fmt: skip
EDGE_INTS = st.sampled_from([-(2**63) - 1, -(10**30), -1, 0, 2**63, 2**64, 10**30, 10**100])


def int_values() -> st.SearchStrategy[str]:
    """Integers out of range (never huge-but-valid: that is a long run, not a bad input)."""
    return st.one_of(EDGE_INTS.map(str), st.integers(-(10**6), 0).map(str), BAD_NUMBERS, ODD_TEXT)


def float_values() -> st.SearchStrategy[str]:
    floats = st.floats(allow_nan=True, allow_infinity=True).map(repr)
    return st.one_of(floats, st.integers(-(10**6), 0).map(str), BAD_NUMBERS, ODD_TEXT)


def str_values() -> st.SearchStrategy[str]:
    return st.one_of(ODD_TEXT, st.sampled_from(["", "a/b", "../x", ".hidden", "x" * 300, "é"]))


def option_values(key: str) -> st.SearchStrategy[str]:
    kind = FIELDS[key]
    if kind is int:
        return int_values()
    if kind is float:
        return float_values()
    return str_values()


@st.composite
def option_case(draw: st.DrawFn) -> Case:
    """One option of `wm train` / `wm run` set to a value of the wrong type or out of range."""
    command = draw(st.sampled_from(["train", "train", "run"]))
    key = draw(st.sampled_from(sorted(k for k in FIELDS if k not in _OWN_CLASS)))
    if FIELDS[key] is bool:  # a switch given a value, or a misspelt switch
        junk = draw(st.sampled_from([f"--{key}=maybe", f"--{key} 1", f"--no-{key}=x"]))
        return Case("option-value", fresh(command, {}, tuple(junk.split())))
    value = draw(option_values(key))
    return Case("option-value", fresh(command, {key: value}))


@st.composite
def seed_case(draw: st.DrawFn) -> Case:
    seed = str(draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32))))
    form = draw(st.sampled_from(["train", "run", "mpc", "dream"]))
    if form in ("train", "run"):
        return Case("seed", fresh(form, {"seed": seed}))
    argv = (*MPC, "--seed", seed) if form == "mpc" else (*READERS[1], "--seed", seed)
    return Case("seed", argv, source="run")


BAD_DEVICES = ["meta", "mps", "xpu", "cuda", "cuda:7", "cuda:-1", "cpu:x", "gpu", "", "CPU",
               "cuda:99999999999999999999", "hpu", "vulkan", "ipu", "lazy"]  # fmt: skip


@st.composite
def device_case(draw: st.DrawFn) -> Case:
    device = draw(st.one_of(st.sampled_from(BAD_DEVICES), ODD_TEXT.filter(lambda t: t != "auto")))
    form = draw(st.sampled_from(["train", "eval-model", "dream", "mpc"]))
    if form == "train":
        return Case("device", fresh("train", {"device": device}))
    base = {"eval-model": READERS[0], "dream": READERS[1], "mpc": MPC[:4]}[form]
    return Case("device", (*base, "--device", device), source="train")


def _is_port(text: str) -> bool:
    """Whether argparse's int() reads `text` as a port ('+3', '٣' and '1_0' are ints to it)."""
    try:
        return 1 <= int(text) <= 65535
    except ValueError:
        return False


@st.composite
def port_case(draw: st.DrawFn) -> Case:
    """A port out of range, not a number, or taken (never a free one: TensorBoard would serve)."""
    port = draw(
        st.one_of(
            st.integers(max_value=0).map(str),
            st.integers(min_value=65536).map(str),
            BAD_NUMBERS.filter(lambda text: not _is_port(text)),
            st.just("{port}"),
        )
    )
    return Case("port", ("tensorboard", "--logdir", "{runs}", "--port", port))


@st.composite
def size_case(draw: st.DrawFn, least: int = 9) -> Case:
    """A size 10**least or more of an option memory grows with."""
    command = draw(st.sampled_from(["train", "run"]))
    key = draw(st.sampled_from(sorted(SIZES[command])))
    size = str(draw(st.integers(min_value=10**least, max_value=2**63 - 1)))
    return Case("size", fresh(command, SIZES[command][key] | {key: size}))


@st.composite
def rule_case(draw: st.DrawFn) -> Case:
    """Options valid alone, not together."""
    rule = draw(st.sampled_from(["elites", "seed-steps", "horizon", "budget", "seed-horizon"]))
    n = draw(st.integers(1, 10**6))
    if rule == "elites":
        kind = draw(st.sampled_from(["cem", "hybrid"]))
        options = {"planner.kind": kind, "planner.population": str(n), "planner.elites": str(n + 1)}
        return Case("cross-field", fresh("run", options))
    if rule == "seed-steps":
        return Case("cross-field", fresh("run", {"steps": str(n), "loop.seed_steps": str(n + 1)}))
    if rule == "horizon":
        return Case("cross-field", fresh("train", {"train.horizon": str(200 + n)}))
    if rule == "budget":
        return Case("cross-field", fresh("train", {"steps": str(n % 4 + 1)}))  # < horizon 5
    options = {"loop.seed_steps": str(n % 4 + 1), "steps": "300"}
    return Case("cross-field", fresh("run", options))


STRAY = ["--", "-x", "--modle.hidden", "--train.lr", "--steps=", "--=1", "-", "--no-", "--train.",
         "--resume", "--planner", "é", "\u200b", "--help-me", "--seed", "3", "--env"]  # fmt: skip


@st.composite
def argv_case(draw: st.DrawFn) -> Case:
    """Stray tokens after a command: unknown options, missing values, odd text."""
    tokens = tuple(
        draw(st.lists(st.one_of(st.sampled_from(STRAY), ODD_TEXT), min_size=1, max_size=3))
    )
    form = draw(st.sampled_from(["train", "run", "eval-model", "dream", "mpc", "tasks", "tb"]))
    if form in ("train", "run"):
        return Case("argv", fresh(form, {}, tokens))
    if form == "tasks":
        return Case("argv", ("tasks", *tokens))
    if form == "tb":
        return Case("argv", ("tensorboard", "--logdir", "{runs}", "--port", "{port}", *tokens))
    base = {"eval-model": READERS[0], "dream": READERS[1], "mpc": MPC}[form]
    return Case("argv", (*base, *tokens), source="run")
