"""Damage to a run folder's files, and file-system errors injected while `wm` runs: the cases of
`input_cases.py` that need a prepared run folder.

Damage is drawn as data (which file, which bytes, which key by index) and applied to a copy of a
prepared run folder; keys and tensors are picked by index modulo what the file holds, so the
draws do not depend on the prepared files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from hypothesis import strategies as st
from tensorboard.summary.writer.record_writer import RecordWriter

from agents.app.runs.folder import CHECKPOINT_FILE, CONFIG_FILE, DATA_FILE
from benchmarks.input_cases import MPC, READERS, RESUMES, Case, Fault, fresh
from worldmodel.io.checkpoint import load_checkpoint, save_checkpoint

Damage = Callable[[Path], None]
EDGES = st.sampled_from([-1, 0, 2**63, 2**64, -(2**63) - 1, 2**70, "", [], {}, 1.5, "1"])
JSON_VALUES = st.recursive(
    st.one_of(
        EDGES, st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=8),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=4,
)  # fmt: skip


# --- bytes ----------------------------------------------------------------------------------------


def _bytes_damage(draw: st.DrawFn, name: str) -> tuple[Damage, str]:
    op = draw(st.sampled_from(["truncate", "flip", "empty", "delete", "folder", "garbage"]))
    if op == "truncate":
        keep = draw(st.floats(0.0, 0.999))
        return lambda run: _rewrite(
            run / name, lambda b: b[: int(len(b) * keep)]
        ), f"{op} {keep:.3f}"
    if op == "flip":
        flips = draw(
            st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(1, 255)), min_size=1, max_size=4)
        )
        return lambda run: _rewrite(run / name, lambda b: _flip(b, flips)), f"{op} {flips}"
    if op == "garbage":
        junk = draw(st.binary(min_size=1, max_size=64))
        return lambda run: (run / name).write_bytes(junk), f"{op} {junk[:8]!r}"
    if op == "empty":
        return lambda run: (run / name).write_bytes(b""), op
    if op == "delete":
        return lambda run: (run / name).unlink(), op
    return lambda run: _as_folder(run / name), op


def _rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    path.write_bytes(change(path.read_bytes()))


def _flip(payload: bytes, flips: list[tuple[float, int]]) -> bytes:
    out = bytearray(payload)
    for where, mask in flips:
        if out:
            out[int(len(out) * where)] ^= mask
    return bytes(out)


def _as_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("a folder where a file should be\n")


# --- JSON -----------------------------------------------------------------------------------------


def _paths(tree: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a JSON tree (lists are leaves), the root's keys first."""
    if not isinstance(tree, dict):
        return []
    out = [prefix + (k,) for k in tree]
    for k, v in tree.items():
        out += _paths(v, prefix + (k,))
    return out


def _edit(tree: dict, index: int, value: object, delete: bool, skip: str = "") -> None:
    """Key path number `index` (modulo their count) of `tree`, but none under key `skip`,
    deleted or set to `value`."""
    paths = [p for p in _paths(tree) if p[0] != skip] or _paths(tree)
    if not paths:
        return
    *parents, leaf = paths[index % len(paths)]
    node = tree
    for key in parents:
        node = node[key]
    if delete:
        del node[leaf]
    else:
        node[leaf] = value


@st.composite
def json_edit(draw: st.DrawFn) -> tuple[Callable[[dict], None], str]:
    """An edit of a JSON tree: a key (by index) deleted or set to another JSON value; half the
    time none under 'config' (a checkpoint's meta holds its config: the rest would seldom be
    drawn, and the counters and states there are where damage goes unchecked)."""
    index, delete = draw(st.integers(0, 10**6)), draw(st.booleans())
    skip = draw(st.sampled_from(["", "config"]))
    value = None if delete else draw(JSON_VALUES)
    what = f"key #{index}{' (not config)' if skip else ''} "
    what += "deleted" if delete else f"= {value!r}"[:60]
    return (lambda tree: _edit(tree, index, value, delete, skip)), what


@st.composite
def config_damage(draw: st.DrawFn) -> tuple[Damage, str]:
    op = draw(st.sampled_from(["bytes", "edit", "edit", "not-object", "not-utf8"]))
    if op == "bytes":
        return _bytes_damage(draw, CONFIG_FILE)
    if op == "edit":
        edit, what = draw(json_edit())
        return lambda run: _edit_json(run / CONFIG_FILE, edit), what
    if op == "not-object":
        doc = draw(
            st.one_of(
                st.lists(JSON_VALUES, max_size=2), st.text(max_size=5), st.integers(), st.none()
            )
        )
        return lambda run: (run / CONFIG_FILE).write_text(json.dumps(doc)), f"document {doc!r}"[:60]
    at = draw(st.floats(0.0, 0.999))
    return lambda run: _rewrite(run / CONFIG_FILE, lambda b: _insert(b, at, b"\xff\xfe")), op


def _insert(payload: bytes, at: float, junk: bytes) -> bytes:
    cut = int(len(payload) * at)
    return payload[:cut] + junk + payload[cut:]


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    tree = json.loads(path.read_text())
    edit(tree)
    path.write_text(json.dumps(tree))


# --- checkpoint and data --------------------------------------------------------------------------

TENSOR_OPS = ("nan", "inf", "shape", "float64", "int32", "float16", "drop", "stray")


@st.composite
def checkpoint_damage(draw: st.DrawFn) -> tuple[Damage, str]:
    op = draw(st.sampled_from(["bytes", "bytes", "meta", "meta", "tensor"]))
    if op == "bytes":
        return _bytes_damage(draw, CHECKPOINT_FILE)
    if op == "meta":
        edit, what = draw(json_edit())
        return lambda run: _resave(run, lambda groups, meta: edit(meta)), f"meta {what}"
    index, how = draw(st.integers(0, 10**6)), draw(st.sampled_from(TENSOR_OPS))
    return lambda run: _resave(
        run, lambda g, m: _tensor_edit(g, index, how)
    ), f"tensor #{index} {how}"


def _resave(run: Path, edit: Callable[[dict, dict], None]) -> None:
    groups, meta = load_checkpoint(run / CHECKPOINT_FILE)
    edit(groups, meta)
    save_checkpoint(run / CHECKPOINT_FILE, groups, meta)


def _tensor_edit(groups: dict, index: int, how: str) -> None:
    names = sorted((g, k) for g, tensors in groups.items() for k in tensors)
    group, key = names[index % len(names)]
    tensor = groups[group][key]
    if how == "drop":
        del groups[group][key]
    elif how == "stray":
        groups[group][key + "_stray"] = torch.zeros(2)
    elif how == "shape":
        groups[group][key] = tensor.reshape(-1)[: max(tensor.numel() - 1, 0)].clone()
    elif how in ("nan", "inf") and tensor.is_floating_point() and tensor.numel():
        tensor.view(-1)[0] = float(how)
    elif how in ("float64", "int32", "float16"):
        groups[group][key] = tensor.to(getattr(torch, how))


ARRAY_OPS = ("drop", "nan", "str", "int8", "bool", "complex", "short", "extra-dim", "shuffle")


@st.composite
def data_damage(draw: st.DrawFn) -> tuple[Damage, str]:
    op = draw(st.sampled_from(["bytes", "bytes", "array", "array", "header"]))
    if op == "bytes":
        return _bytes_damage(draw, DATA_FILE)
    if op == "header":
        slot, value = draw(st.integers(0, 3)), draw(st.integers(-(2**62), 2**62))
        return lambda run: _edit_npz(
            run, lambda a: _set_header(a, slot, value)
        ), f"header[{slot}]={value}"
    index, how = draw(st.integers(0, 10**6)), draw(st.sampled_from(ARRAY_OPS))
    return lambda run: _edit_npz(run, lambda a: _array_edit(a, index, how)), f"array #{index} {how}"


def _set_header(arrays: dict[str, np.ndarray], slot: int, value: int) -> None:
    arrays["_meta"] = arrays["_meta"].copy()
    arrays["_meta"][slot] = value


def _edit_npz(run: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
    with np.load(run / DATA_FILE) as npz:
        arrays = {k: npz[k] for k in npz.files}
    edit(arrays)
    with (run / DATA_FILE).open("wb") as f:
        np.savez_compressed(f, **arrays)


def _array_edit(arrays: dict[str, np.ndarray], index: int, how: str) -> None:
    key = sorted(arrays)[index % len(arrays)]
    a = arrays[key]
    if how == "drop":
        del arrays[key]
    elif how == "nan":
        arrays[key] = a.astype(np.float64)
        arrays[key].reshape(-1)[:1] = np.nan
    elif how in ("str", "int8", "bool", "complex"):
        arrays[key] = a.astype(
            {"str": "<U3", "int8": np.int8, "bool": bool, "complex": complex}[how]
        )
    elif how == "short":
        arrays[key] = a[:-1]
    elif how == "extra-dim":
        arrays[key] = a[..., None]
    else:
        arrays[key] = np.random.default_rng(index).permutation(a)


# --- cases ----------------------------------------------------------------------------------------


def _command(draw: st.DrawFn, readers_too: bool = True) -> tuple[tuple[str, ...], str]:
    """A command that reads a run folder, and the prepared folder it reads."""
    forms = ["train-resume", "run-resume", "unfinished-resume"]
    forms += ["eval-model", "dream", "mpc"] if readers_too else []
    form = draw(st.sampled_from(forms))
    if form.endswith("resume"):
        source = form.split("-")[0]
        return RESUMES["run" if source == "run" else "train"], source
    if form == "mpc":
        return MPC, "run"
    return READERS[0] if form == "eval-model" else READERS[1], draw(
        st.sampled_from(["train", "run"])
    )


@st.composite
def config_case(draw: st.DrawFn) -> Case:
    argv, source = _command(draw)
    damage, what = draw(config_damage())
    return Case("config-json", argv, source, damage, what)


@st.composite
def checkpoint_case(draw: st.DrawFn) -> Case:
    argv, source = _command(draw)
    damage, what = draw(checkpoint_damage())
    return Case("checkpoint", argv, source, damage, what)


@st.composite
def data_case(draw: st.DrawFn) -> Case:
    form = draw(st.sampled_from(["eval-model", "dream", "unfinished-resume"]))
    if form == "unfinished-resume":
        argv, source = RESUMES["train"], "unfinished"
    else:
        argv, source = (
            (READERS[0] if form == "eval-model" else READERS[1]),
            draw(st.sampled_from(["train", "run"])),
        )
    damage, what = draw(data_damage())
    return Case("data-npz", argv, source, damage, what)


WRITES = ("fsync", "replace", "mkdir", "events")
CODES = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EIO)


@st.composite
def disk_case(draw: st.DrawFn) -> Case:
    """A file-system error part-way through a command that writes, or while one reads."""
    form = draw(
        st.sampled_from(["train", "train", "unfinished-resume", "eval-model", "dream", "read"])
    )
    code = draw(st.sampled_from(CODES))
    after = draw(st.integers(0, 6))
    if form == "read":
        argv, source = _command(draw, readers_too=False)
        return Case(
            "disk",
            argv,
            source,
            fault=Fault("read", draw(st.sampled_from([errno.EACCES, errno.EIO])), after % 3),
        )
    target = draw(st.sampled_from(WRITES))
    if form == "train":
        return Case("disk", fresh("train", {}), fault=Fault(target, code, after))
    if form == "unfinished-resume":
        return Case("disk", RESUMES["train"], "unfinished", fault=Fault(target, code, after))
    argv = READERS[0] if form == "eval-model" else (*READERS[1][:-1], "--video")
    return Case(
        "disk",
        argv,
        "train",
        fault=Fault(draw(st.sampled_from(["mkdir", "events"])), code, after % 2),
    )


# --- injected faults ------------------------------------------------------------------------------


@contextlib.contextmanager
def injected(fault: Fault | None, root: Path) -> Iterator[list[int]]:
    """While the block runs, the `fault.after + 1`-th call of its target raises its OSError
    (and every later one: a full disk stays full); reads fail only for files under `root`.
    Yields [errors raised], filled in as they are."""
    raised = [0]
    if fault is None:
        yield raised
        return
    calls = [0]

    def failing(real: Callable, path_of: Callable[..., object] = lambda *a, **k: None) -> Callable:
        def call(*args: object, **kwargs: object) -> object:
            path = path_of(*args, **kwargs)
            if fault.target == "read" and not str(path).startswith(str(root)):
                return real(*args, **kwargs)
            calls[0] += 1
            if calls[0] > fault.after:
                raised[0] += 1
                raise OSError(
                    fault.code, os.strerror(fault.code), None if path is None else str(path)
                )
            return real(*args, **kwargs)

        return call

    patches = {
        "fsync": [(os, "fsync", failing(os.fsync))],
        "replace": [(os, "replace", failing(os.replace, lambda src, dst, **k: dst))],
        "mkdir": [
            (pathlib.Path, "mkdir", failing(pathlib.Path.mkdir, lambda self, *a, **k: self)),
            (os, "makedirs", failing(os.makedirs, lambda name, *a, **k: name)),
        ],
        "events": [(RecordWriter, "write", failing(RecordWriter.write))],
        "read": [
            (pathlib.Path, name, failing(getattr(pathlib.Path, name), lambda self, *a, **k: self))
            for name in ("read_bytes", "read_text")
        ],
    }[fault.target]
    with contextlib.ExitStack() as stack:
        for owner, name, replacement in patches:
            stack.enter_context(mock.patch.object(owner, name, replacement))
        yield raised
