"""The exported SavedModel, checked through what TF Serving consumes: plain TensorFlow loading (no keras_focal),
saved_model_cli, the warmup file and the REST / gRPC requests of examples/serve_client.py.

One tiny RetinaNet is exported once for the module. It is built with score_threshold=0.0 so that the untrained
model returns a full set of detections to compare.
"""

import base64
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from _examples import load_example

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = (64, 64)
# (batch, height, width): two sizes different from the model's, batch 1 and 3.
CASES = [(1, 48, 80), (3, 96, 72)]
SAVED_MODEL_CLI = str(Path(sys.executable).with_name("saved_model_cli"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _images(batch, height, width, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras_focal.export
    from keras_focal.models import RetinaNet

    model = RetinaNet(3, backbone="resnet18", fpn_width=32, head_convs=1, image_size=IMAGE_SIZE,
                      score_threshold=0.0)
    base = tmp_path_factory.mktemp("saved_models") / "tiny"
    version_dir = keras_focal.export.export_saved_model(model, str(base))
    return model, Path(version_dir)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(str(exported[1]))


def _load_serve_client():
    return load_example("serve_client")


PLAIN_TF_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf

    export_dir, inputs_path, outputs_path = sys.argv[1:]
    model = tf.saved_model.load(export_dir)
    inputs = np.load(inputs_path)
    results = {}
    for key in inputs.files:
        images = inputs[key]
        out = model.signatures["serving_default"](images=tf.constant(images))
        # The same pixels through the bytes and tf.Example signatures (PNG is lossless).
        encoded = [tf.io.encode_png(image).numpy() for image in images]
        out_bytes = model.signatures["serving_bytes"](image_bytes=tf.constant(encoded))
        examples = [tf.train.Example(features=tf.train.Features(feature={"image/encoded": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[e]))})).SerializeToString() for e in encoded]
        out_example = model.signatures["tf_example"](serialized_examples=tf.constant(examples))
        for prefix, o in (("default", out), ("bytes", out_bytes), ("example", out_example)):
            for name, value in o.items():
                results[f"{key}/{prefix}/{name}"] = value.numpy()
                results[f"{key}/{prefix}/{name}/dtype"] = np.array(value.dtype.name)
    np.savez(outputs_path, **results)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("keras_focal", "keras_hub"))
    print("LEAKED", leaked)
""")


def test_plain_tensorflow_process_matches_detect(exported, tmp_path):
    model, version_dir = exported
    inputs = {f"case{i}": _images(*case, seed=i) for i, case in enumerate(CASES)}
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = tmp_path / "plain_tf.py"
    script.write_text(PLAIN_TF_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(version_dir), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "outputs.npz")], capture_output=True, text=True, env=ENV, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LEAKED []" in proc.stdout, proc.stdout
    served = np.load(tmp_path / "outputs.npz")

    for key, images in inputs.items():
        expected = model.detect(tf.image.resize(tf.constant(images, tf.float32), IMAGE_SIZE))
        batch = images.shape[0]
        assert int(np.min(expected["num_detections"])) > 0, "nothing to compare"
        for prefix in ("default", "bytes", "example"):
            got = {name: served[f"{key}/{prefix}/{name}"] for name in expected}
            assert str(served[f"{key}/{prefix}/detection_classes/dtype"]) == "int32"
            assert str(served[f"{key}/{prefix}/num_detections/dtype"]) == "int32"
            assert str(served[f"{key}/{prefix}/detection_boxes/dtype"]) == "float32"
            assert got["detection_boxes"].shape == (batch, 100, 4)
            assert got["detection_scores"].shape == (batch, 100)
            np.testing.assert_array_equal(got["num_detections"], expected["num_detections"].numpy())
            np.testing.assert_array_equal(got["detection_classes"], expected["detection_classes"].numpy())
            np.testing.assert_allclose(got["detection_scores"], expected["detection_scores"].numpy(), atol=1e-4)
            np.testing.assert_allclose(got["detection_boxes"], expected["detection_boxes"].numpy(), atol=1e-4)
            scores = got["detection_scores"]
            assert np.all(np.diff(scores, axis=1) <= 1e-6), "scores not sorted descending"


def _signature_blocks(show_output):
    blocks = {}
    for match in re.finditer(r"signature_def\['(\w+)'\]:(.*?)Method name is", show_output, re.S):
        blocks[match.group(1)] = match.group(2)
    return blocks


def _tensors(block, kind):
    return dict(re.findall(rf"{kind}\['(\w+)'\] tensor_info:\s+dtype: (\w+)", block))


def test_saved_model_cli_show_lists_signatures(exported):
    proc = subprocess.run([SAVED_MODEL_CLI, "show", "--all", "--dir", str(exported[1])],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    blocks = _signature_blocks(proc.stdout)
    outputs = {"detection_boxes": "DT_FLOAT", "detection_scores": "DT_FLOAT", "detection_classes": "DT_INT32",
               "num_detections": "DT_INT32"}
    expected_inputs = {"serving_default": {"images": "DT_UINT8"}, "serving_bytes": {"image_bytes": "DT_STRING"},
                       "tf_example": {"serialized_examples": "DT_STRING"}}
    for name, inputs in expected_inputs.items():
        assert name in blocks, f"signature {name} missing from saved_model_cli show:\n{proc.stdout[:2000]}"
        assert _tensors(blocks[name], "inputs") == inputs
        assert _tensors(blocks[name], "outputs") == outputs
    assert "shape: (-1, -1, -1, 3)" in blocks["serving_default"]
    assert "shape: (-1)" in blocks["serving_bytes"]


def test_saved_model_cli_run_on_npy(exported, tmp_path):
    # saved_model_cli run loads with the TF1 session loader, as TF Serving does (not tf.saved_model.load).
    np.save(tmp_path / "images.npy", _images(2, 40, 56, seed=7))
    outdir = tmp_path / "out"
    proc = subprocess.run([SAVED_MODEL_CLI, "run", "--dir", str(exported[1]), "--tag_set", "serve",
                           "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'images.npy'}",
                           "--outdir", str(outdir)], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    boxes = np.load(outdir / "detection_boxes.npy")
    num = np.load(outdir / "num_detections.npy")
    assert boxes.shape == (2, 100, 4) and boxes.dtype == np.float32
    assert num.shape == (2,) and num.dtype == np.int32
    assert np.all((boxes >= 0) & (boxes <= 1))


@pytest.mark.parametrize("bad, words", [
    (b"", "empty"),
    (b"this is not an image", "not an encoded JPEG or PNG"),
    ("truncated_png", "PNG"),
])
def test_corrupt_bytes_raise_readable_error_and_process_carries_on(loaded, bad, words):
    valid = tf.io.encode_png(_images(1, 30, 40, seed=3)[0]).numpy()
    if bad == "truncated_png":
        bad = valid[:40]
    serve = loaded.signatures["serving_bytes"]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        serve(image_bytes=tf.constant([valid, bad]))
    assert words in info.value.message
    if words != "PNG":  # our own assertions name the element; TF's decoder names the format
        assert "image_bytes[1]" in info.value.message
    out = serve(image_bytes=tf.constant([valid]))
    assert out["detection_boxes"].shape == (1, 100, 4)


def test_tf_example_without_image_is_invalid_argument(loaded):
    empty = tf.train.Example().SerializeToString()
    with pytest.raises(tf.errors.InvalidArgumentError, match="image/encoded"):
        loaded.signatures["tf_example"](serialized_examples=tf.constant([empty]))


def test_warmup_records_match_signatures_and_run(exported, loaded):
    from keras_focal.export import read_warmup_requests

    path = exported[1] / "assets.extra" / "tf_serving_warmup_requests"
    records = read_warmup_requests(str(path))
    assert {r.predict_log.request.model_spec.signature_name for r in records} == {"serving_default",
                                                                                 "serving_bytes"}
    for record in records:
        assert record.WhichOneof("log_type") == "predict_log"
        request = record.predict_log.request
        signature = loaded.signatures[request.model_spec.signature_name]
        specs = signature.structured_input_signature[1]
        assert set(request.inputs) == set(specs)
        feed = {}
        for name, proto in request.inputs.items():
            value = tf.make_ndarray(proto)
            assert tf.dtypes.as_dtype(proto.dtype) == specs[name].dtype
            assert specs[name].shape.is_compatible_with(value.shape)
            feed[name] = tf.constant(value, dtype=specs[name].dtype)
        out = signature(**feed)
        assert out["num_detections"].shape[0] == value.shape[0]


def test_rest_body_has_tf_serving_predict_shape_and_runs(loaded, tmp_path):
    client = _load_serve_client()
    images = _images(2, 30, 40, seed=5)
    encoded = [tf.io.encode_png(i).numpy() for i in images]
    body = json.loads(json.dumps(client.build_rest_body("serving_bytes", encoded)))  # really JSON-serializable
    assert set(body) == {"signature_name", "instances"}
    assert body["signature_name"] == "serving_bytes"
    assert len(body["instances"]) == 2
    for instance, data in zip(body["instances"], encoded):
        assert set(instance) == {"image_bytes"} and set(instance["image_bytes"]) == {"b64"}
        assert base64.b64decode(instance["image_bytes"]["b64"]) == data
    # What TF Serving does with the row format: stack each named input, {"b64"} -> DT_STRING bytes.
    batch = [base64.b64decode(i["image_bytes"]["b64"]) for i in body["instances"]]
    out = loaded.signatures[body["signature_name"]](image_bytes=tf.constant(batch))
    assert out["num_detections"].shape == (2,)

    pixels_body = json.loads(json.dumps(client.build_rest_body("serving_default", pixels=images)))
    assert pixels_body["signature_name"] == "serving_default"
    stacked = np.array([i["images"] for i in pixels_body["instances"]], dtype=np.uint8)
    np.testing.assert_array_equal(stacked, images)

    assert client.rest_url("h", 8501, "tiny") == "http://h:8501/v1/models/tiny:predict"
    assert client.rest_url("h", 8501, "tiny", 3) == "http://h:8501/v1/models/tiny/versions/3:predict"


def test_grpc_request_matches_signature(loaded):
    client = _load_serve_client()
    encoded = [tf.io.encode_jpeg(_images(1, 30, 40, seed=6)[0]).numpy()]
    request = client.build_grpc_request("tiny", "serving_bytes", encoded, version=2)
    assert request.model_spec.name == "tiny" and request.model_spec.version.value == 2
    proto = request.inputs["image_bytes"]
    assert tf.dtypes.as_dtype(proto.dtype) == tf.string
    assert [d.size for d in proto.tensor_shape.dim] == [1]
    out = loaded.signatures["serving_bytes"](image_bytes=tf.constant(tf.make_ndarray(proto)))
    assert out["detection_scores"].shape == (1, 100)


def test_serve_client_dry_run_prints_request(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(tf.io.encode_png(_images(1, 20, 20, seed=8)[0]).numpy())
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "serve_client.py"), "--dry-run",
                           "--model-name", "tiny", str(image)], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "POST http://localhost:8501/v1/models/tiny:predict" in proc.stdout
    body = json.loads(proc.stdout.split("\n", 1)[1])
    assert body["signature_name"] == "serving_bytes"
    assert "b64" in body["instances"][0]["image_bytes"]


def _fake_tf_serving_rest(loaded):
    """An HTTP server that answers :predict the way TF Serving does for the row format (enough for the client)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            signature = loaded.signatures[body["signature_name"]]
            (name,) = signature.structured_input_signature[1]
            values = [i[name] for i in body["instances"]]
            values = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v for v in values]
            out = signature(**{name: tf.constant(values, dtype=signature.structured_input_signature[1][name].dtype)})
            batch = len(values)
            predictions = [{k: v.numpy()[i].tolist() for k, v in out.items()} for i in range(batch)]
            payload = json.dumps({"predictions": predictions}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_serve_client_rest_and_grpc_round_trip(loaded, tmp_path, capsys):
    """The client against in-process stand-ins of TF Serving's REST and gRPC front-ends."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    client = _load_serve_client()
    paths = []
    for i, (h, w) in enumerate([(30, 40), (50, 20)]):
        path = tmp_path / f"img{i}.png"
        path.write_bytes(tf.io.encode_png(_images(1, h, w, seed=10 + i)[0]).numpy())
        paths.append(str(path))

    rest = _fake_tf_serving_rest(loaded)
    try:
        assert client.main(["--rest-port", str(rest.server_address[1]), "--min-score", "0", *paths]) == 0
    finally:
        rest.shutdown()
    rest_out = capsys.readouterr().out
    served = loaded.signatures["serving_bytes"](
        image_bytes=tf.constant([open(path, "rb").read() for path in paths]))["num_detections"].numpy()
    for path, n in zip(paths, served):
        assert f"{path}: {n} detections, {n} with score >= 0.0" in rest_out, rest_out

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802
            signature = loaded.signatures[request.model_spec.signature_name]
            feed = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            response = predict_pb2.PredictResponse()
            for k, v in signature(**feed).items():
                response.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert client.main(["--protocol", "grpc", "--grpc-port", str(port), "--min-score", "0", *paths]) == 0
    finally:
        server.stop(None)
    grpc_out = capsys.readouterr().out
    # Same detections, same printout, whichever protocol. An untrained model gives many equal scores, and the
    # order of equal scores after top-k / NMS is unspecified, so the lines are compared as a multiset.
    assert sorted(grpc_out.splitlines()) == sorted(rest_out.splitlines())
