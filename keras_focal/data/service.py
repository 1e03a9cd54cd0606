"""Input pipelines on separate CPU machines with TensorFlow's tf.data service.

When decoding, augmenting and encoding need more CPU than the training machine has, the same `make_dataset`
pipeline runs on tf.data service workers: one dispatcher hands out the work, any number of workers run the pipeline
and stream finished batches to the trainer over gRPC. The trainer only changes one line:

    ds = keras_focal.data.make_dataset(examples, ..., encoder=model.anchor_encoder, augment=True, repeat=True)
    ds = keras_focal.data.service.distribute(ds, "grpc://dispatcher-host:5050")
    model.fit(ds, ...)

Start the servers (each blocks until killed):

    python -m keras_focal.data.service dispatcher --port 5050
    python -m keras_focal.data.service worker --dispatcher dispatcher-host:5050 --port 5051

The workers must be able to read the examples (the same paths as the trainer: a shared file system or bucket) and
import keras_focal; the trainer's pipeline graph, the anchor encoder included, is sent to them.

Sharding (`policy`):
- "dynamic" (default, `ShardingPolicy.DYNAMIC`, "distributed_epoch"): the dispatcher splits the source dataset
  and hands each split to one worker, so within an epoch every example is produced exactly once by the whole
  fleet (at most once when a worker is lost: its unfinished splits are not redone). The source must be splittable
  (files, `from_tensor_slices`, `range`): `make_dataset` over `keras_focal.data.load` is.
- "off" (`ShardingPolicy.OFF`): every worker runs the whole pipeline, so with n workers an epoch of the job holds
  each example n times, in n independent shuffles; with `repeat=True` (training) that is ordinary sampling.
"""

from __future__ import annotations

import argparse

import tensorflow as tf

POLICIES = {
    "dynamic": tf.data.experimental.service.ShardingPolicy.DYNAMIC,
    "off": tf.data.experimental.service.ShardingPolicy.OFF,
}


def start_dispatcher(port=0, work_dir=None):
    """Starts a dispatcher in this process on `port` (0: any free port); returns the `DispatchServer`
    (its `.target` is the `grpc://host:port` address the trainer and the workers use).

    work_dir: a folder (shared storage) where the dispatcher journals its state, so that a restarted dispatcher
        resumes the running jobs (fault tolerant mode); None keeps the state in memory.
    """
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=work_dir is not None)
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher, port=0, worker_address=None):
    """Starts a worker in this process that registers with `dispatcher` ("host:port" or "grpc://host:port");
    returns the `WorkerServer`. worker_address: how the trainer reaches this worker ("host:port"; default
    localhost and the bound port, fine on one machine; give the machine's name when trainer and worker differ)."""
    address = dispatcher[len("grpc://"):] if dispatcher.startswith("grpc://") else dispatcher
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=address, port=port, worker_address=worker_address)
    return tf.data.experimental.service.WorkerServer(config)


def distribute(dataset, service, policy="dynamic", job_name=None):
    """`dataset` produced by tf.data service workers instead of this process.

    service: the dispatcher's address, "grpc://host:port".
    policy: "dynamic" (each example once per epoch across the workers) or "off" (each worker the whole dataset);
        see the module docstring.
    job_name: trainers that give the same name read from one shared job (each batch goes to one of them).

    The returned dataset has the element spec of `dataset`; its batches arrive in no fixed order.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {policy!r}")
    if not str(service).startswith("grpc://"):
        raise ValueError(f"service must be a dispatcher address 'grpc://host:port', got {service!r}")
    distributed = dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=POLICIES[policy], service=service, job_name=job_name))
    return distributed.prefetch(tf.data.AUTOTUNE)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m keras_focal.data.service",
                                description="Start a tf.data service dispatcher or worker (blocks until killed).")
    sub = p.add_subparsers(dest="role", required=True)
    d = sub.add_parser("dispatcher", help="the server that hands out work; the trainer's --data-service address")
    d.add_argument("--port", type=int, default=5050)
    d.add_argument("--work-dir", default=None, help="journal folder for a restartable (fault tolerant) dispatcher")
    w = sub.add_parser("worker", help="a server that runs the input pipeline")
    w.add_argument("--dispatcher", required=True, help="the dispatcher's host:port (or grpc://host:port)")
    w.add_argument("--port", type=int, default=5051)
    w.add_argument("--worker-address", default=None,
                   help="host:port the trainer reaches this worker at (default localhost:PORT)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras_focal  # noqa: F401  (the pipelines sent to a worker use keras_focal's registered objects)

    if args.role == "dispatcher":
        server = start_dispatcher(args.port, args.work_dir)
        print(f"tf.data service dispatcher at {server.target}", flush=True)
    else:
        server = start_worker(args.dispatcher, args.port, args.worker_address)
        print(f"tf.data service worker on port {args.port}, dispatcher {args.dispatcher}", flush=True)
    server.join()


if __name__ == "__main__":
    main()
