"""Forward + backward benchmark of the keras_focal losses against their peers.

    python benchmarks/losses.py                       # FocalLoss on (8, 100000, 80), eager / tf.function / jit
    python benchmarks/losses.py --shape 2,1000,80     # small, to check that it runs
    python benchmarks/losses.py --losses focal,qfl,dfl --modes function,jit
    python benchmarks/losses.py --losses focal --implementations keras_focal,keras_focal_vector_alpha

Each (implementation, mode) runs in its own subprocess so that peak memory (and the GPU allocator's peak when there
is a GPU) is its own. Peak memory is the resident-set high-water mark (VmHWM) during the timed calls, reset after
the inputs are built and the warm-up call has run (Linux `/proc/self/clear_refs`), minus the resident set at that
point: the memory a forward + backward call needs beyond its inputs. Reported: ms per forward+backward call (median),
an effective bandwidth (bytes of logits + labels read and gradient written, per second), peak memory and the ratios
to the peer.

Peers: FocalLoss (scalar alpha, and `keras_focal_vector_alpha`: one alpha per class, which must cost the same:
the ratio of the two is printed per mode) vs
keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, from_logits=True),
keras_cv.losses.FocalLoss (skipped with a message if keras-cv is not installed) and the same formula written with
plain autodiff (no custom gradient), plus `floor` (mean(x * y): the least time and memory any loss with a full-size
gradient takes in this harness); QFL and DFL vs a direct keras.ops transcription of their formulas.
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

IMPLEMENTATIONS = {
    "focal": ["keras_focal", "keras_focal_vector_alpha", "keras_core", "keras_cv", "autodiff_transcription", "floor"],
    "qfl": ["keras_focal", "transcription"],
    "dfl": ["keras_focal", "transcription"],
}
PEER = {"focal": "keras_core", "qfl": "transcription", "dfl": "transcription"}


# ----------------------------------------------------------------------------------------------------------------
# Child: one implementation, one mode


def _status_kb(field):
    """A field of /proc/self/status in kB (VmRSS: resident now, VmHWM: resident high-water mark)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss():
    """Reset VmHWM to the current resident set (Linux >= 4.0); returns False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _make_fn(loss_name, impl):
    import keras
    from keras import ops

    if loss_name == "focal":
        if impl == "keras_focal":
            from keras_focal.losses import FocalLoss

            return FocalLoss(alpha=0.25, gamma=2.0, from_logits=True)
        if impl == "keras_focal_vector_alpha":
            # One alpha per class (the last axis), compiled into the same fused kernel as a constant vector.
            import numpy as np

            from keras_focal.losses import FocalLoss

            return FocalLoss(alpha=np.linspace(0.1, 0.4, _NUM_CLASSES[0]).tolist(), gamma=2.0, from_logits=True)
        if impl == "keras_core":
            return keras.losses.BinaryFocalCrossentropy(
                apply_class_balancing=True, alpha=0.25, gamma=2.0, from_logits=True
            )
        if impl == "keras_cv":
            import keras_cv

            return keras_cv.losses.FocalLoss(alpha=0.25, gamma=2.0, from_logits=True)
        if impl == "autodiff_transcription":
            # The same stable formula, differentiated by autodiff instead of the closed-form gradient.
            def focal(y, x):
                bce = ops.softplus(x) - x * y
                a = y * ops.sigmoid(-x) + (1.0 - y) * ops.sigmoid(x)
                w = 0.25 * y + 0.75 * (1.0 - y)
                return ops.mean(ops.mean(w * a * a * bce, axis=-1))

            return focal
        if impl == "floor":
            # Not a loss: mean(x * y), whose gradient is one full-size tensor. Its time and memory are what any loss
            # with a full-size gradient costs at least in this harness.
            return lambda y, x: ops.mean(x * y)
    if loss_name == "qfl":
        if impl == "keras_focal":
            from keras_focal.losses import QualityFocalLoss

            return QualityFocalLoss(beta=2.0, from_logits=True)

        def qfl(y, x):
            sigma = ops.sigmoid(x)
            value = -ops.abs(y - sigma) ** 2 * ((1 - y) * ops.log_sigmoid(-x) + y * ops.log_sigmoid(x))
            return ops.mean(ops.mean(value, axis=-1))

        return qfl
    if loss_name == "dfl":
        if impl == "keras_focal":
            from keras_focal.losses import DistributionFocalLoss

            return DistributionFocalLoss(from_logits=True)

        def dfl(y, x):
            n = x.shape[-1] - 1
            y = ops.clip(y, 0.0, n - 0.01)
            left = ops.floor(y)
            log_s = ops.log_softmax(x, axis=-1)
            onehot_l = ops.one_hot(ops.cast(left, "int32"), n + 1)
            onehot_r = ops.one_hot(ops.cast(left, "int32") + 1, n + 1)
            value = -((left + 1 - y) * ops.sum(onehot_l * log_s, -1) + (y - left) * ops.sum(onehot_r * log_s, -1))
            return ops.mean(value)

        return dfl
    raise ValueError((loss_name, impl))


def _inputs(loss_name, shape, seed=0):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    if loss_name == "dfl":
        n_bins = 17
        targets = tf.constant(rng.uniform(0, n_bins - 1, size=shape).astype("float32"))
        logits = tf.constant(rng.normal(size=tuple(shape) + (n_bins,)).astype("float32"))
        return targets, logits
    logits = tf.constant((rng.normal(size=shape) * 2 - 4).astype("float32"))
    positives = rng.uniform(size=shape) < 0.01  # 1% positives
    if loss_name == "qfl":
        labels = tf.constant((positives * rng.uniform(0.3, 1.0, size=shape)).astype("float32"))
    else:
        labels = tf.constant(positives.astype("float32"))
    return labels, logits


_NUM_CLASSES = [None]  # the last axis of the logits, set by the child before the loss is built


def child(loss_name, impl, mode, shape, repeats):
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, ROOT)
    _NUM_CLASSES[0] = shape[-1]
    fn = _make_fn(loss_name, impl)
    labels, logits = _inputs(loss_name, shape)

    def step(y, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(y, x)
        return value, tape.gradient(value, x)

    if mode == "function":
        step = tf.function(step)
    elif mode == "jit":
        step = tf.function(step, jit_compile=True)
    gpus = tf.config.list_physical_devices("GPU")
    value, grad = step(labels, logits)  # warm-up / trace / compile
    _ = float(value), float(tf.reduce_sum(grad))
    del value, grad
    gc.collect()
    if gpus:
        tf.config.experimental.reset_memory_stats("GPU:0")
    if not _reset_peak_rss():
        raise SystemExit("cannot reset the peak RSS here (needs Linux /proc/self/clear_refs)")
    rss_before_kb = _status_kb("VmRSS")
    times, cpu_times, values = [], [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        value, grad = step(labels, logits)
        _ = grad.numpy().ravel()[0]  # wait for the result
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        values.append(float(value))
        del value, grad  # so that the next call starts from the same resident set
    bytes_moved = labels.numpy().nbytes + 2 * logits.numpy().nbytes  # read logits + labels, write the gradient
    ms = 1000 * float(np.median(times))
    out = {
        "ms": ms,
        "cpu_ms": 1000 * float(np.median(cpu_times)),  # CPU time of all threads: steadier on a shared machine
        "gbps": bytes_moved / (ms / 1000) / 1e9,
        "peak_rss_gb": _status_kb("VmHWM") / 1e6,
        "peak_over_inputs_gb": (_status_kb("VmHWM") - rss_before_kb) / 1e6,
        "value": values[-1],
    }
    if gpus:
        out["gpu_peak_gb"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 1e9
    print("RESULT " + json.dumps(out))


# ----------------------------------------------------------------------------------------------------------------
# Parent: the table


def run_one(loss_name, impl, mode, shape, repeats, timeout):
    if impl == "keras_cv":
        import importlib.util

        if importlib.util.find_spec("keras_cv") is None:
            return {"skipped": "keras-cv not installed (pip install keras-cv)"}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", loss_name, impl, mode,
           "--shape", ",".join(map(str, shape)), "--repeats", str(repeats)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout}s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"skipped": "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="8,100000,80", help="logits shape (DFL: the target shape, 17 bins added)")
    parser.add_argument("--losses", default="focal,qfl,dfl")
    parser.add_argument("--modes", default="eager,function,jit")
    parser.add_argument("--implementations", default=None,
                        help="comma-separated subset of the implementations (default: all of each loss)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per (implementation, mode)")
    parser.add_argument("--child", nargs=3, metavar=("LOSS", "IMPL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    if args.child:
        child(*args.child, shape, args.repeats)
        return

    import tensorflow as tf

    print(f"tensorflow {tf.__version__}, devices: {[d.device_type for d in tf.config.list_physical_devices()]}")
    print(f"shape {shape}, median of {args.repeats} calls of forward + backward (after warm-up)\n")
    for loss_name in args.losses.split(","):
        loss_shape = shape[:-1] + (4,) if loss_name == "dfl" else shape
        print(f"== {loss_name}  (inputs {loss_shape}{' x 17 bins' if loss_name == 'dfl' else ''})")
        header = f"{'implementation':<24}{'mode':<10}{'ms/call':>11}{'GB/s':>8}{'peak RSS GB':>13}" \
                 f"{'over inputs':>13}{'GPU peak GB':>13}{'speed-up':>10}{'memory':>9}"
        print(header)
        for mode in args.modes.split(","):
            chosen = [i for i in IMPLEMENTATIONS[loss_name]
                      if args.implementations is None or i in args.implementations.split(",")]
            results = {impl: run_one(loss_name, impl, mode, loss_shape, args.repeats, args.timeout)
                       for impl in chosen}
            peer = results.get(PEER[loss_name], {})
            for impl, r in results.items():
                if "skipped" in r:
                    print(f"{impl:<24}{mode:<10}  skipped: {r['skipped']}")
                    continue
                speedup = peer["ms"] / r["ms"] if "ms" in peer else float("nan")
                mem_key = "gpu_peak_gb" if "gpu_peak_gb" in r else "peak_over_inputs_gb"
                memory = r[mem_key] / peer[mem_key] if peer.get(mem_key) else float("nan")
                gpu = f"{r['gpu_peak_gb']:.2f}" if "gpu_peak_gb" in r else "-"
                print(f"{impl:<24}{mode:<10}{r['ms']:>11.1f}{r['gbps']:>8.2f}{r['peak_rss_gb']:>13.2f}"
                      f"{r['peak_over_inputs_gb']:>13.2f}{gpu:>13}{speedup:>9.2f}x{memory:>8.2f}x")
            scalar, vector = results.get("keras_focal", {}), results.get("keras_focal_vector_alpha", {})
            if "ms" in scalar and "ms" in vector:
                print(f"{'':<24}{mode:<10}vector alpha / scalar alpha: {vector['ms'] / scalar['ms']:.2f}x time, "
                      f"{vector['cpu_ms'] / scalar['cpu_ms']:.2f}x CPU time, "
                      f"{vector['peak_over_inputs_gb'] / max(scalar['peak_over_inputs_gb'], 1e-9):.2f}x memory")
        print(f"(speed-up and memory are relative to {PEER[loss_name]}; memory: GPU peak if any, else the "
              "peak RSS growth over the inputs)\n")


if __name__ == "__main__":
    main()
