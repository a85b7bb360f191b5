"""Measured peak memory of a CPU run: what validates the memory model without a GPU.

CUDA's `max_memory_allocated` is the peak of bytes live in the caching allocator's blocks;
the same quantity on a CPU is the c10 CPU allocator's: every tensor storage, kernel-internal
buffers included. torch's profiler (profile_memory=True) records each allocation and free
with the allocator's running total of the bytes it has seen allocated; the peak of that
total during `fn`, less its value when `fn` began, is the peak above what was live before
(the weights, loaded beforehand). The running total only moves while a profiler records,
so it is read relative to its first value, never as an absolute.
"""

from __future__ import annotations

from typing import Any, Callable


def cpu_peak(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(peak bytes allocated on the CPU above the start, fn's result) of `fn()`."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            fields = node.extra_fields
            events.append((node.start_time_ns, fields.total_allocated, fields.alloc_size))
        stack.extend(node.children)
    if not events:
        return 0, result
    events.sort()
    start = events[0][1] - events[0][2]  # the running total before the first event
    return max(0, max(total for _, total, _ in events) - start), result
