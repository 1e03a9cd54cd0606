"""Timing helpers of the benchmarks: turns between peers, and op time by op type from a tf.profiler trace."""

import collections
import glob
import os
import tempfile


def profile_op_types(fn, calls=1):
    """Runs `fn()` `calls` times under tf.profiler; returns {op type: seconds}, summed over TensorFlow's executor
    threads (ops that run in parallel both count, so the total can exceed the wall time)."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = tempfile.mkdtemp(prefix="kf-profile-")
    tf.profiler.experimental.start(logdir)
    try:
        for _ in range(calls):
            fn()
    finally:
        tf.profiler.experimental.stop()
    (path,) = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor threads; their events are "name:OpType"
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:  # skips ExecutorState::Process, ThreadpoolListener::...
                    totals[name.rsplit(":", 1)[1]] += event.duration_ps * 1e-12 / calls
    return dict(totals)


def format_profile(totals, top=10):
    """The `top` op types by time, with their share, one per line."""
    total = sum(totals.values()) or 1.0
    lines = [f"    {'op type':<34}{'s/call':>9}{'share':>8}"]
    for op, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {op:<34}{seconds:>9.3f}{100 * seconds / total:>7.1f}%")
    lines.append(f"    {'all ops':<34}{total:>9.3f}")
    return "\n".join(lines)


def time_interleaved(calls, repeats, warmup=1):
    """{name: median seconds} of `calls` ({name: fn}), run in turn (a, b, a, b, ...) `repeats` times after `warmup`
    untimed rounds, plus {name: median of its per-round ratio to the first call}.

    Taking turns matters on a shared machine: this one runs the same convolutions at about 55 or about 100 GFLOP/s
    depending on the moment (measured; host scheduling), so timing one detector after the other can make either
    look twice as fast. Every round sees both at the same moment."""
    import statistics
    import time

    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    first = next(iter(calls))
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratios = {name: statistics.median(a / b for a, b in zip(times[first], t)) for name, t in times.items()}
    return medians, ratios
