"""The device memory budget: what each device can still give a program.

Owns `device_room` (an allocator's and a GPU driver's free memory),
`gpu_free_bytes` (cuMemGetInfo through ctypes), `device_capacity` (the most
one device can hold) and `device_memory_budget_mb` (DEVICE_MEMORY_SHARE of
what the local devices can still give: the default budget of a program).
"""

from __future__ import annotations

import ctypes
import os

import jax

from overparam import config as config_lib

DEVICE_MEMORY_SHARE = 0.6  # of the memory a device can still give (of RAM on the CPU: half that)
GPU_RESERVE_BYTES = 2**30  # of a GPU's free memory: CUDA's and its libraries' own, outside JAX


def device_room(stats: dict, device_free: int | None) -> int | None:
    """Bytes that a device's JAX allocator can still give this process; None if unknown.

    stats: the device's `memory_stats()`. bytes_limit is the allocator's cap (on
    a GPU, XLA's BFC allocator: total memory x XLA_PYTHON_CLIENT_MEM_FRACTION, 0.75 by
    default; a TPU may give bytes_reservable_limit instead), bytes_in_use what
    this process holds, pool_bytes what the allocator has taken from the device
    (all of bytes_limit once preallocated; it grows with use when
    XLA_PYTHON_CLIENT_PREALLOCATE=false, overparam's default).
    device_free: the device's free memory as its driver reports it (a GPU), or
    None: memory that other processes hold is not free, and GPU_RESERVE_BYTES
    of it stays free for CUDA's own allocations.
    The room is the smaller of the allocator's (limit - in use) and the device's
    (taken but unused + free - reserve).
    """
    in_use = stats.get("bytes_in_use", 0)
    limit = stats.get("bytes_limit") or stats.get("bytes_reservable_limit")
    rooms = [] if limit is None else [limit - in_use]
    if device_free is not None:
        taken_unused = max(stats.get("pool_bytes", in_use) - in_use, 0)
        rooms.append(taken_unused + device_free - GPU_RESERVE_BYTES)
    return max(min(rooms), 0) if rooms else None


def gpu_free_bytes(device, cuda=None) -> int | None:
    """A CUDA device's free memory (cuMemGetInfo, in the primary context that XLA uses),
    or None where the driver cannot be asked. cuda: the driver library (default
    libcuda.so.1, loaded with ctypes; tests pass a fake)."""
    ordinal = getattr(device, "local_hardware_id", None)
    if not isinstance(ordinal, int):
        return None
    try:
        cuda = cuda or ctypes.CDLL("libcuda.so.1")
        dev, ctx = ctypes.c_int(), ctypes.c_void_p()
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        if (cuda.cuInit(0) or cuda.cuDeviceGet(ctypes.byref(dev), ordinal)
                or cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev)):
            return None
        try:
            if cuda.cuCtxPushCurrent_v2(ctx):
                return None
            try:
                failed = cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total))
            finally:
                cuda.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
        finally:
            cuda.cuDevicePrimaryCtxRelease_v2(dev)
        return None if failed else free.value
    except (OSError, AttributeError, TypeError):  # no driver, or not this driver's API
        return None


def _memory_stats(device) -> dict:
    try:
        return device.memory_stats() or {}
    except (RuntimeError, NotImplementedError):  # a backend without statistics
        return {}


def device_capacity() -> int:
    """The most one local device can hold, in bytes: the RAM on the CPU, else the
    allocator's cap (bytes_limit, or a TPU's bytes_reservable_limit), or without one
    what it can still give (`device_room`); never the RAM. Raises ConfigError
    (memory_budget_mb) on an accelerator that tells neither."""
    device = jax.local_devices()[0]
    if device.platform == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    stats = _memory_stats(device)
    limit = stats.get("bytes_limit") or stats.get("bytes_reservable_limit") or device_room(
        stats, gpu_free_bytes(device) if device.platform == "gpu" else None)
    if limit is None:
        raise config_lib.ConfigError(
            "memory_budget_mb", f"the {device.platform} device tells neither its allocator's "
            "limit nor its free memory; set the budget per program, in MiB")
    return limit


def device_memory_budget_mb() -> float:
    """A memory budget for one program on each local device, in MiB.

    On an accelerator: DEVICE_MEMORY_SHARE of the memory it can still give
    (`device_room`, the least of the local devices'). The rest is headroom: for
    XLA:GPU's autotuning, which runs each GEMM's candidate kernels on real
    buffers of its operands' size while a program compiles (make_plan compiles
    no batch before an estimate says it fits), for the allocator's
    fragmentation, and for what XLA's memory analysis does not count. On the
    CPU, where devices share the RAM, half that share of RAM is split among them.
    Raises ConfigError (memory_budget_mb) on an accelerator that tells neither.
    """
    devices = jax.local_devices()
    if devices[0].platform == "cpu":
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return DEVICE_MEMORY_SHARE / 2 * ram / len(devices) / 2**20
    rooms = [device_room(_memory_stats(d), gpu_free_bytes(d) if d.platform == "gpu" else None)
             for d in devices]
    if None in rooms:
        raise config_lib.ConfigError(
            "memory_budget_mb", f"the {devices[0].platform} device tells neither its allocator's "
            "limit nor its free memory; set the budget per program, in MiB")
    return DEVICE_MEMORY_SHARE * min(rooms) / 2**20
