"""Save and resume the training loop's state (``.npz``, no pickle).

A backend's state is a pytree whose *structure* comes from the code (``method.init``);
only its leaves are stored. Resuming rebuilds a fresh state and refills its leaves,
checking their number, shapes and dtypes, so a stale or tampered file cannot load into
the wrong structure.
"""

from __future__ import annotations

import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "bayes_snn.checkpoint"


def save_checkpoint(path, state, epoch: int, rng_key: jax.Array, method: str, history: dict) -> None:
    """Atomically write the loop state after ``epoch`` completed epochs."""
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays.update({f"h/{k}": np.asarray(v) for k, v in history.items()})
    arrays["rng_key"] = np.asarray(jax.random.key_data(rng_key) if jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key) else rng_key)
    meta = {"format": FORMAT, "method": method, "epoch": int(epoch), "leaves": len(leaves), "history": sorted(history)}
    arrays["__meta__"] = np.array(json.dumps(meta))
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_checkpoint(path, like_state, method: str):
    """Return ``(state, epoch, rng_key, history)`` from ``path``, shaped like ``like_state``."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array")
        with loaded as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(str(arrays.pop("__meta__")))
    except (ValueError, OSError, KeyError, EOFError, NotImplementedError, RecursionError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a valid bayes_snn checkpoint ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a bayes_snn checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("method") != method:
        raise ValueError(f"{path} was written by method {meta.get('method')!r}; cannot resume it with {method!r}")
    epoch = meta.get("epoch")
    if not isinstance(epoch, int) or epoch < 0 or "rng_key" not in arrays:
        raise ValueError(f"{path} is not a valid bayes_snn checkpoint (epoch {epoch!r}, rng_key present: {'rng_key' in arrays})")
    like, treedef = jax.tree_util.tree_flatten(like_state)
    if meta.get("leaves") != len(like):
        raise ValueError(f"{path} holds {meta.get('leaves')} state arrays; this configuration needs {len(like)}")
    leaves = []
    for i, ref in enumerate(like):
        value = arrays.get(f"leaf_{i}")
        if value is None or value.shape != np.shape(ref) or value.dtype != np.asarray(ref).dtype:
            got = None if value is None else (value.shape, str(value.dtype))
            raise ValueError(f"{path}: state array {i} must be {np.shape(ref)} {np.asarray(ref).dtype}; got {got}")
        leaves.append(jnp.asarray(value))
    history = {k: arrays[f"h/{k}"] for k in meta.get("history", []) if f"h/{k}" in arrays}
    return jax.tree_util.tree_unflatten(treedef, leaves), epoch, jnp.asarray(arrays["rng_key"]), history


__all__ = ["save_checkpoint", "load_checkpoint"]
