r"""A load test of the exported detector under hostile traffic: threads call the loaded SavedModel's signatures
in-process for a bounded time with a mix of valid and invalid requests, then the same through the `.tflite` file
in LiteRT. Not part of the test suite.

    python benchmarks/serving_load.py --seconds 10 --threads 2 8 32                       # a tiny untrained model
    python benchmarks/serving_load.py --checkpoint runs/shapes_gfl/model.keras --seconds 30
    python benchmarks/serving_load.py --bomb-rss           # peak RSS of one 16000 x 16000 PNG, limit None vs on

Request kinds, drawn in turn by every thread (`KINDS`):
- `jpeg`, `png`: one or two valid images of various sizes; must succeed;
- `corrupt`: bytes that are no image, and a JPEG cut short; must fail with InvalidArgumentError;
- `oversize_png`: a 250 KB PNG declaring 16000 x 16000; `oversize_jpeg`: 60 bytes declaring 65500 x 65500;
  must fail before decoding;
- `oversize_batch`: max_batch_size + 1 small PNGs; must fail.

Runners:
- `savedmodel`: `tf.saved_model.load(version).signatures[...]`, shared by all threads: `serving_bytes` for the
  encoded kinds, `serving_default` for a share of the valid ones (uint8 pixels).
- `litert`: one LiteRT interpreter per thread (an interpreter is not thread-safe) running the exported `.tflite`;
  the bytes go first through the same header check and decode the SavedModel graph runs
  (`keras_focal.image_limits.check_declared_size`, `tf.io.decode_image`, resize to the model's size) in a
  `tf.function`, as a TFLite deployment with TensorFlow on the host would do.

Reported per runner and thread count: requests/s, p50 / p99 latency of the valid requests, peak RSS (VmRSS sampled
every 20 ms, and the process's VmHWM), errors by kind, and "unexpected" (a valid request that failed, or an
invalid one that passed): it must be 0.
"""

import argparse
import collections
import os
import sys
import tempfile
import threading
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))

import numpy as np  # noqa: E402

from _bombs import jpeg_header, png_bomb  # noqa: E402 - tests/_bombs.py: the crafted files

KINDS = ("jpeg", "png", "corrupt", "oversize_png", "oversize_jpeg", "oversize_batch")
VALID = ("jpeg", "png")
# How often each kind is drawn (valid traffic dominates, as on a real server under attack by a few clients).
WEIGHTS = {"jpeg": 4, "png": 4, "corrupt": 1, "oversize_png": 1, "oversize_jpeg": 1, "oversize_batch": 1}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="a trained .keras model (default: a tiny untrained one)")
    p.add_argument("--threads", type=int, nargs="+", default=[2, 8, 32])
    p.add_argument("--seconds", type=float, default=10.0, help="time per runner and thread count")
    p.add_argument("--max-batch-size", type=int, default=4, help="the export's max_batch_size")
    p.add_argument("--runners", nargs="+", default=["savedmodel", "litert"], choices=["savedmodel", "litert"])
    p.add_argument("--bomb-rss", action="store_true",
                   help="only measure the peak RSS of one 16000 x 16000 PNG request, limit None and default, each in "
                        "a fresh process")
    return p.parse_args(argv)


def _vm(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))


class RssSampler(threading.Thread):
    """Samples VmRSS every `period` seconds; `peak` is the highest value seen."""

    def __init__(self, period=0.02):
        super().__init__(daemon=True)
        self.period, self.peak, self._halt = period, _vm("VmRSS"), threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.peak = max(self.peak, _vm("VmRSS"))
            time.sleep(self.period)

    def stop(self):
        self._halt.set()
        self.join()
        return self.peak


# ------------------------------------------------------------------------------------------- the model
def _model(checkpoint):
    import keras

    from keras_focal.models import RetinaNet

    if checkpoint:
        import keras_focal.models  # noqa: F401 - registers the classes

        return keras.saving.load_model(checkpoint, compile=False)
    return RetinaNet(3, backbone="resnet18", fpn_width=16, head_convs=1, image_size=(128, 128))


def _requests(max_batch_size, seed=0):
    """{kind: list of (signature, payload)}: a few prepared requests of each kind."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def photo(height, width):
        yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
        base = np.stack([yy, xx, 1 - yy], axis=-1) * 200
        return (base + rng.uniform(0, 55, (height, width, 3))).astype(np.uint8)

    sizes = [(240, 320), (480, 640), (300, 200), (128, 128)]
    jpegs = [tf.io.encode_jpeg(photo(*s), quality=90).numpy() for s in sizes]
    pngs = [tf.io.encode_png(photo(*s)).numpy() for s in sizes]
    small = tf.io.encode_png(photo(16, 16)).numpy()
    return {
        "jpeg": [("bytes", [j]) for j in jpegs] + [("bytes", jpegs[:2]), ("images", photo(240, 320)[None])],
        "png": [("bytes", [p]) for p in pngs] + [("bytes", pngs[2:]), ("images", photo(300, 200)[None])],
        "corrupt": [("bytes", [rng.bytes(3000)]), ("bytes", [jpegs[1][: len(jpegs[1]) // 3]]),
                    ("bytes", [b"version https://git-lfs.github.com/spec/v1\n"])],
        "oversize_png": [("bytes", [png_bomb(16000, 16000)])],
        "oversize_jpeg": [("bytes", [jpeg_header(65500, 65500)])],
        "oversize_batch": [("bytes", [small] * (max_batch_size + 1)),
                           ("images", np.zeros((max_batch_size + 1, 16, 16, 3), np.uint8))],
    }


def _schedule(seed):
    rng = np.random.default_rng(seed)
    kinds = [k for k in KINDS for _ in range(WEIGHTS[k])]
    while True:
        yield kinds[int(rng.integers(len(kinds)))]


# ------------------------------------------------------------------------------------------------ runners
def savedmodel_runner(version_dir):
    import tensorflow as tf

    loaded = tf.saved_model.load(version_dir)
    serve_bytes, serve_images = loaded.signatures["serving_bytes"], loaded.signatures["serving_default"]

    def make():
        def call(signature, payload):
            if signature == "bytes":
                return serve_bytes(image_bytes=tf.constant(payload))
            return serve_images(images=tf.constant(payload))
        return call

    return make


def litert_runner(tflite_path, image_size, max_image_pixels, max_batch_size):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from keras_focal import image_limits

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def decode(encoded):
        with tf.control_dependencies([image_limits.check_declared_size(encoded, "image", max_image_pixels)]):
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return tf.cast(tf.round(tf.image.resize(tf.cast(image, tf.float32), image_size)), tf.uint8)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def resize(images):
        checks = [tf.debugging.Assert(tf.shape(images)[0] <= max_batch_size, ["batch over max_batch_size"]),
                  tf.debugging.Assert(tf.shape(images)[1] * tf.shape(images)[2] <= max_image_pixels,
                                      ["image over max_image_pixels"])]
        with tf.control_dependencies(checks):
            return tf.cast(tf.round(tf.image.resize(tf.cast(images, tf.float32), image_size)), tf.uint8)

    def make():
        runner = Interpreter(model_path=tflite_path, num_threads=1).get_signature_runner("serving_default")

        def call(signature, payload):
            if signature == "bytes":
                if len(payload) > max_batch_size:
                    raise tf.errors.InvalidArgumentError(None, None, "batch over max_batch_size")
                frames = [decode(tf.constant(encoded)).numpy() for encoded in payload]
            else:
                frames = list(resize(tf.constant(payload)).numpy())
            return [runner(images=frame[np.newaxis]) for frame in frames]
        return call

    return make


def run_load(make_call, requests, threads, seconds):
    """Runs `threads` threads for `seconds`; returns the row of the table."""
    import tensorflow as tf

    warm = make_call()
    for kind in VALID:
        for signature, payload in requests[kind]:
            warm(signature, payload)
    latencies, errors, unexpected, counts = [], collections.Counter(), collections.Counter(), collections.Counter()
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(index):
        call = make_call()
        schedule = _schedule(index)
        local_lat, local_err, local_unexp, local_counts = [], collections.Counter(), collections.Counter(), \
            collections.Counter()
        n = 0
        while time.perf_counter() < deadline:
            kind = next(schedule)
            signature, payload = requests[kind][n % len(requests[kind])]
            n += 1
            start = time.perf_counter()
            try:
                call(signature, payload)
                ok = True
            except tf.errors.InvalidArgumentError:
                ok = False
            elapsed = time.perf_counter() - start
            local_counts[kind] += 1
            if kind in VALID:
                local_lat.append(elapsed)
                if not ok:
                    local_unexp[kind] += 1
            elif ok:
                local_unexp[kind] += 1
            else:
                local_err[kind] += 1
        with lock:
            latencies.extend(local_lat)
            errors.update(local_err)
            unexpected.update(local_unexp)
            counts.update(local_counts)

    sampler = RssSampler()
    sampler.start()
    start = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - start
    peak = sampler.stop()
    lat = np.asarray(latencies) * 1000
    return {"threads": threads, "requests": sum(counts.values()), "rps": sum(counts.values()) / wall,
            "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "peak_rss_mb": peak, "errors": dict(errors), "unexpected": dict(unexpected), "counts": dict(counts)}


def _table(name, rows):
    print(f"\n{name}")
    print("| threads | requests | req/s | valid p50 ms | valid p99 ms | peak RSS MB | refused by kind | unexpected |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        refused = ", ".join(f"{k} {r['errors'].get(k, 0)}" for k in KINDS if k not in VALID)
        unexpected = sum(r["unexpected"].values())
        print(f"| {r['threads']} | {r['requests']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {refused} | {unexpected} {r['unexpected'] or ''} |")


# -------------------------------------------------------------------------------------------- bomb RSS
BOMB_SCRIPT = r"""
import sys, time
import tensorflow as tf
sys.path.insert(0, sys.argv[2])
from _bombs import png_bomb
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmHWM:"))
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_bytes"]
serve(image_bytes=tf.constant([tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)).numpy()]))
data = png_bomb(16000, 16000)
before = hwm()
start = time.perf_counter()
try:
    serve(image_bytes=tf.constant([data]))
    outcome = "accepted"
except tf.errors.InvalidArgumentError:
    outcome = "refused"
print(f"RESULT {outcome} {time.perf_counter() - start:.3f} {hwm() - before:.0f} {hwm():.0f}")
"""


def bomb_rss(model, workdir):
    import subprocess

    import keras_focal.export

    tests_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests")
    script = os.path.join(workdir, "bomb.py")
    with open(script, "w") as f:
        f.write(BOMB_SCRIPT)
    print("| max_image_pixels | outcome | seconds | peak RSS growth MB | peak RSS MB |")
    print("|---|---|---|---|---|")
    for limit in (None, 40_000_000):
        version = keras_focal.export.export_saved_model(model, os.path.join(workdir, f"bomb_{limit}"),
                                                        max_image_pixels=limit)
        out = subprocess.run([sys.executable, script, version, tests_dir], capture_output=True, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
        if line is None:
            print(f"| {limit} | process failed (rc {out.returncode}) | | | |", out.stderr[-500:])
            continue
        _, outcome, seconds, growth, peak = line.split()
        print(f"| {limit} | {outcome} | {seconds} | {growth} | {peak} |")


def main(argv=None):
    args = parse_args(argv)
    import keras_focal.export

    model = _model(args.checkpoint)
    with tempfile.TemporaryDirectory() as workdir:
        if args.bomb_rss:
            bomb_rss(model, workdir)
            return
        limits = {"max_image_pixels": 40_000_000, "max_batch_size": args.max_batch_size}
        version = keras_focal.export.export_saved_model(model, os.path.join(workdir, "sm"), **limits)
        requests = _requests(args.max_batch_size)
        print(f"model image_size {tuple(model.image_size)}, limits {limits}, {args.seconds:.0f} s per row, "
              f"{os.cpu_count()} CPUs; start RSS {_vm('VmRSS'):.0f} MB")
        if "savedmodel" in args.runners:
            make = savedmodel_runner(version)
            _table("SavedModel (tf.saved_model.load, signatures serving_bytes / serving_default)",
                   [run_load(make, requests, n, args.seconds) for n in args.threads])
        if "litert" in args.runners:
            path = keras_focal.export.export_tflite(model, os.path.join(workdir, "model.tflite"))
            make = litert_runner(path, tuple(model.image_size), limits["max_image_pixels"], args.max_batch_size)
            _table("LiteRT (.tflite float32, one interpreter per thread; header check + decode in TensorFlow)",
                   [run_load(make, requests, n, args.seconds) for n in args.threads])
        print(f"\nprocess peak RSS (VmHWM) {_vm('VmHWM'):.0f} MB")


if __name__ == "__main__":
    main()
