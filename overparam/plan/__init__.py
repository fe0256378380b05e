"""The plan: which networks train together, in which programs, and whether the machine can
hold the sweep.

This package re-exports what callers use; its modules, in import order:
sizes (a network's weights, FLOPs, memory, state and rows), memory (the device
memory budget), batches (`Batch`, `Plan`, `static_for`, chunking, `make_plan`,
`describe`) and resources (`footprint`, `check_resources`: the bounds checked
before anything is allocated or written).
"""

from overparam.config import num_networks
from overparam.plan.batches import (
    Batch,
    Measure,
    Plan,
    chunking,
    describe,
    make_plan,
    record_period,
    static_for,
    sweep_chunking,
    with_cache_group,
)
from overparam.plan.memory import (
    DEVICE_MEMORY_SHARE,
    GPU_RESERVE_BYTES,
    device_capacity,
    device_memory_budget_mb,
    device_room,
    gpu_free_bytes,
)
from overparam.plan.resources import (
    CHECKPOINT_ENTRY,
    DISK_SLACK,
    HOST_BASE,
    HOST_FILE_ENTRY,
    HOST_ROW_BYTES,
    HOST_SHARE,
    MANIFEST_BASE,
    MANIFEST_ENTRY,
    MAX_NETWORKS,
    PART_BYTES,
    PROGRAM_BYTES,
    RUN_HOST_BYTES,
    RUN_ROW_BYTES,
    STEP_LIMIT,
    Footprint,
    check_resources,
    disk_room,
    footprint,
    numeric_fields,
)
from overparam.plan.sizes import (
    bytes_per_network,
    cache_group_size,
    dataset_row_bytes,
    layers_row_bytes,
    num_params,
    record_values,
    state_bytes,
    step_flops,
    steps_row_bytes,
)

__all__ = [
    "CHECKPOINT_ENTRY", "DEVICE_MEMORY_SHARE", "DISK_SLACK", "GPU_RESERVE_BYTES", "HOST_BASE",
    "HOST_FILE_ENTRY", "HOST_ROW_BYTES", "HOST_SHARE", "MANIFEST_BASE", "MANIFEST_ENTRY",
    "MAX_NETWORKS", "PART_BYTES", "PROGRAM_BYTES", "RUN_HOST_BYTES", "RUN_ROW_BYTES",
    "STEP_LIMIT", "Batch", "Footprint", "Measure", "Plan", "bytes_per_network",
    "cache_group_size", "check_resources", "chunking", "dataset_row_bytes", "describe",
    "device_capacity", "device_memory_budget_mb", "device_room", "disk_room", "footprint",
    "gpu_free_bytes", "layers_row_bytes", "make_plan", "num_networks", "num_params",
    "numeric_fields", "record_period", "record_values", "state_bytes", "static_for",
    "step_flops", "steps_row_bytes", "sweep_chunking", "with_cache_group",
]
