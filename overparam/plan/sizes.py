"""Sizes of one network: its weights, FLOPs, device memory, state and rows.

Owns the arithmetic on a `train.Static` that the plan and the resource checks
share: `num_params`, `step_flops`, `bytes_per_network` (the analytic estimate
of a network's device memory in a chunk), `state_bytes` (its checkpointed
state), `cache_group_size`, the raw bytes of a row of steps/, layers/ and
datasets/, and `size_text` (bytes in words).
"""

from __future__ import annotations

from overparam import config as config_lib
from overparam import train


def dtype_bytes(dtype: str) -> int:
    return 8 if dtype == "float64" else 4


def positions_of(static: train.Static) -> int:
    """Where a hidden unit is evaluated per example: an image's d pixels (cnn, resnet), or
    once (the mlp; a flax module counts as the mlp of its width and depth)."""
    return static.d if static.arch in config_lib.CONV_ARCHS else 1


def num_params(static: train.Static) -> int:
    """Weights of one network: the mlp's matrices, or 3x3 convolutions of `width` channels
    on a one-channel image, and the readout."""
    m, L = static.width, static.depth
    if static.arch in config_lib.CONV_ARCHS:
        return 9 * (m + (L - 1) * m * m) + m
    return m * static.d + (L - 1) * m * m + m


def step_flops(static: train.Static) -> int:
    """FLOPs of one training step of one network (forward and backward over its batch): of
    the MLP's matrices, or of 3x3 convolutions at each of an image's d positions (cnn,
    resnet; a flax module counts as the MLP of its width and depth)."""
    m, L = static.width, static.depth
    if static.arch in config_lib.CONV_ARCHS:
        return 6 * static.batch_size * (static.d * 9 * (m + (L - 1) * m * m) + m)
    return 6 * static.batch_size * (static.d * m + (L - 1) * m * m + m)


def record_values(depth: int) -> int:
    """Values of one record of one network: its step, the steps table's measurements and
    the layers table's for each of its layers."""
    return 1 + len(train.STEP_FIELDS) + depth * len(train.LAYER_FIELDS)


def bytes_per_network(static: train.Static) -> int:
    """A generous estimate of one network's live device memory in a chunk: weights (5 or
    6 copies), activations and patterns at every layer (and position), a chunk's
    records, the training and test points, H(0), H^inf and H(t) with Gram tracking, and
    Lanczos's vectors and tridiagonal with sharpness.

    Against XLA's measure on the CPU (the per-network slope of batches of 1 and 4;
    width 512, depth 2, n 128, d 64): 8.8 MB measured for 9.5 MB estimated (Gram
    tracking, test points), 22.7 for 25.9 (sharpness, momentum); convolutions (width
    32, n 32, 8x8 images) keep more temporaries than z, relu(z) and their cotangents:
    5.8 MB for 6.6 (cnn), 9.1 for 9.8 (resnet, test points).
    """
    itemsize = dtype_bytes(static.dtype)
    m, L, n, p = static.width, static.depth, static.n, positions_of(static)
    conv = static.arch in config_lib.CONV_ARCHS
    params = num_params(static)
    copies = 6 if static.momentum else 5   # W(0), D, gradient, update, new D (+ momentum)
    activations = (12 if conv else 4) * n * m * L * p  # z, relu(z), their cotangents
    patterns = n * m * L * p               # bool, 1 byte
    records = static.chunk_records * record_values(L) + n * (static.d + 2)
    # X_test, y_test, f0_test, the forward pass
    test = static.n_test * (static.d + 2 + (6 if conv else 2) * m * L * p)
    gram = 3 * n * n if static.gram_every else 0  # H(0), H^inf, H(t)
    # Lanczos's vectors (three, and the Ritz vector), its warm start, the Hessian-vector
    # product's tangents and their cotangents; its tridiagonal T, T's eigenvectors and a
    # work copy.
    lanczos = 14 * params + 3 * static.sharpness_iters ** 2 if static.sharpness_every else 0
    return ((copies * params + activations + records + test + gram + lanczos) * itemsize
            + patterns)


def state_bytes(static: train.Static) -> int:
    """One network's checkpointed state (`checkpoint.trained_part`): W - W(0), the momentum
    and the sharpness's warm start where they exist, and the warm starts of its spectral
    norms (a (2, fan_in) vector per layer, and (2, d, c_in) per convolution)."""
    m, L, d = static.width, static.depth, static.d
    copies = 1 + bool(static.momentum) + bool(static.sharpness_every)
    if static.arch in config_lib.CONV_ARCHS:
        starts = 2 * (9 + d) * (1 + (L - 1) * m)
    else:
        starts = 2 * (d + (L - 1) * m)
    return (copies * num_params(static) + starts + 8) * dtype_bytes(static.dtype)


def cache_group_size(static: train.Static, cache_bytes: int) -> int:
    """Networks whose activations (one n x width array) fill `cache_bytes` (at least 1),
    0 for none: a batch runs its chunk as groups of that many networks, one after
    the other (chunks.chunk_batch), so that on a CPU a group's arrays stay in the
    caches from step to step. benchmarks/cache_groups.py measured 4 MiB best."""
    if not cache_bytes:
        return 0
    return max(1, cache_bytes // (static.n * static.width * positions_of(static)
                                  * dtype_bytes(static.dtype)))


def steps_row_bytes(dtype: str) -> int:
    """Raw bytes of a steps/ row: run_id (16 characters and an 8-byte offset), step, the
    measurements (in the sweep's dtype)."""
    return 24 + 8 + len(train.STEP_FIELDS) * dtype_bytes(dtype)


def layers_row_bytes(dtype: str) -> int:
    """Raw bytes of a layers/ row: run_id, step, layer, the measurements."""
    return 24 + 16 + len(train.LAYER_FIELDS) * dtype_bytes(dtype)


def dataset_row_bytes(d: int, dtype: str) -> int:
    """Raw bytes of a datasets/ row: dataset_id, split, index, x (d values and a definition
    level each) and y."""
    itemsize = dtype_bytes(dtype)
    return 20 + 16 + 8 + d * (itemsize + 1) + itemsize


def size_text(nbytes: int) -> str:
    """512 bytes, 1.5 GiB, 12.0 TiB, ... (exact for integers of any size)."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    nbytes = int(nbytes)
    k = 0
    while k < len(units) - 1 and nbytes >= 1024 ** (k + 1):
        k += 1
    if k == 0:
        return f"{nbytes} bytes"
    if nbytes >= 10**6 * 1024**k:  # beyond a million EiB
        return f"~10^{len(str(nbytes)) - 1} bytes"
    return f"{nbytes / 1024**k:,.1f} {units[k]}"
