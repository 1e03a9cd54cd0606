"""Query a keras_focal detector served by TF Serving, over REST (JSON) or gRPC (tensorflow-serving-api).

    # REST, encoded image bytes (the default, signature serving_bytes):
    python examples/serve_client.py --model-name shapes_gfl image1.jpg image2.png
    # gRPC:
    python examples/serve_client.py --protocol grpc image1.jpg
    # See the request without a server:
    python examples/serve_client.py --dry-run image1.jpg

`serving_bytes` sends the files as they are (base64 in JSON, `{"b64": ...}`, which TF Serving decodes into a
DT_STRING tensor). `serving_default` decodes the images here and sends uint8 pixels (all images of one request
must have the same size; prefer serving_bytes, which is smaller on the wire).

Responses hold, per image, `detection_boxes` [N, 4] normalized [ymin, xmin, ymax, xmax], `detection_scores` [N]
sorted descending, `detection_classes` [N] (int32) and `num_detections`; rows past num_detections are padding.
"""

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request

SIGNATURE_INPUTS = {"serving_bytes": "image_bytes", "serving_default": "images"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files (JPEG or PNG) to send in one request")
    p.add_argument("--protocol", choices=["rest", "grpc"], default="rest",
                   help="rest: JSON to the :predict endpoint; grpc: PredictRequest via tensorflow-serving-api "
                        "(default: %(default)s)")
    p.add_argument("--host", default="localhost", help="TF Serving host (default: %(default)s)")
    p.add_argument("--rest-port", type=int, default=8501, help="TF Serving REST port (default: %(default)s)")
    p.add_argument("--grpc-port", type=int, default=8500, help="TF Serving gRPC port (default: %(default)s)")
    p.add_argument("--model-name", default="shapes_gfl",
                   help="model name as in models.config / MODEL_NAME (default: %(default)s)")
    p.add_argument("--model-version", type=int, default=None,
                   help="version to query (default: the one TF Serving serves, normally the latest)")
    p.add_argument("--signature", choices=sorted(SIGNATURE_INPUTS), default="serving_bytes",
                   help="serving_bytes: send encoded files; serving_default: send uint8 pixels "
                        "(default: %(default)s)")
    p.add_argument("--min-score", type=float, default=0.3,
                   help="print detections with at least this score (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0, help="request timeout in seconds (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the request that would be sent (URL and JSON body, or the PredictRequest) and exit")
    p.add_argument("--full", action="store_true",
                   help="with --dry-run, print the base64 strings and pixel arrays in full instead of shortened")
    return p.parse_args(argv)


def read_files(paths):
    contents = []
    for path in paths:
        with open(path, "rb") as f:
            contents.append(f.read())
    return contents


def decode_pixels(encoded_images):
    """uint8 [B, H, W, 3] for serving_default (needs TensorFlow for decoding; all images of one size)."""
    import numpy as np
    import tensorflow as tf

    arrays = [tf.io.decode_image(data, channels=3, expand_animations=False).numpy() for data in encoded_images]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise SystemExit(f"serving_default needs images of one size in a request, got {sorted(shapes)}; "
                         "use --signature serving_bytes (the server resizes)")
    return np.stack(arrays).astype(np.uint8)


# --------------------------------------------------------------------------------------------------- REST
def rest_url(host, port, model_name, version=None):
    version_part = f"/versions/{version}" if version is not None else ""
    return f"http://{host}:{port}/v1/models/{model_name}{version_part}:predict"


def build_rest_body(signature, encoded_images=None, pixels=None):
    """The JSON body of TF Serving's predict API, row ("instances") format: one dict per image.

    serving_bytes: `{"signature_name": "serving_bytes", "instances": [{"image_bytes": {"b64": "..."}}, ...]}`
    serving_default: `{"signature_name": "serving_default", "instances": [{"images": [[[r, g, b], ...]]}, ...]}`
    """
    input_name = SIGNATURE_INPUTS[signature]
    if signature == "serving_bytes":
        instances = [{input_name: {"b64": base64.b64encode(data).decode("ascii")}} for data in encoded_images]
    else:
        instances = [{input_name: image.tolist()} for image in pixels]
    return {"signature_name": signature, "instances": instances}


def predict_rest(url, body, timeout):
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))["predictions"]
    except urllib.error.HTTPError as e:  # TF Serving puts the reason in a JSON {"error": ...}
        raise SystemExit(f"TF Serving answered {e.code}: {e.read().decode('utf-8', 'replace')}") from None
    except urllib.error.URLError as e:
        raise SystemExit(f"cannot reach {url}: {e.reason}") from None


# --------------------------------------------------------------------------------------------------- gRPC
def build_grpc_request(model_name, signature, encoded_images=None, pixels=None, version=None):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for the signature."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if signature == "serving_bytes":
        value = tf.make_tensor_proto(list(encoded_images), dtype=tf.string, shape=[len(encoded_images)])
    else:
        value = tf.make_tensor_proto(pixels, dtype=tf.uint8)
    request.inputs[SIGNATURE_INPUTS[signature]].CopyFrom(value)
    return request


def predict_grpc(host, port, request, timeout):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as e:
            raise SystemExit(f"TF Serving answered {e.code().name}: {e.details()}") from None
    outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    batch = len(outputs["num_detections"])
    return [{name: value[i].tolist() for name, value in outputs.items()} for i in range(batch)]


# ---------------------------------------------------------------------------------------------- printing
def _shorten(value, full):
    """A copy of a JSON body with long base64 strings and pixel arrays shortened, for --dry-run."""
    if full:
        return value
    if isinstance(value, dict):
        if set(value) == {"b64"} and len(value["b64"]) > 64:
            return {"b64": f"{value['b64'][:48]}... ({len(value['b64'])} base64 chars)"}
        return {k: _shorten(v, full) for k, v in value.items()}
    if isinstance(value, list):
        if value and isinstance(value[0], list) and isinstance(value[0][0], list):  # an image [H][W][3]
            return f"<uint8 image {len(value)}x{len(value[0])}x{len(value[0][0])}>"
        return [_shorten(v, full) for v in value]
    return value


def describe_grpc_request(request, full=False):
    if full:
        return str(request)
    import tensorflow as tf

    lines = [f"model_spec {{ name: {request.model_spec.name!r} signature_name: "
             f"{request.model_spec.signature_name!r}"
             + (f" version: {request.model_spec.version.value}" if request.model_spec.HasField("version") else "")
             + " }"]
    for name, proto in request.inputs.items():
        shape = [d.size for d in proto.tensor_shape.dim]
        dtype = tf.dtypes.as_dtype(proto.dtype).name
        extra = f", element sizes {[len(s) for s in proto.string_val]} bytes" if proto.string_val else ""
        lines.append(f"inputs[{name!r}]: {dtype} {shape}{extra}")
    return "\n".join(lines)


def print_detections(paths, predictions, min_score):
    for path, pred in zip(paths, predictions):
        n = int(pred["num_detections"])
        kept = [(s, int(c), b) for s, c, b in zip(pred["detection_scores"][:n], pred["detection_classes"][:n],
                                                  pred["detection_boxes"][:n]) if s >= min_score]
        print(f"{path}: {n} detections, {len(kept)} with score >= {min_score}")
        for score, cls, box in kept:
            print(f"  class {cls:3d}  score {score:.3f}  box yxyx [{', '.join(f'{v:.3f}' for v in box)}]")


def main(argv=None):
    args = parse_args(argv)
    encoded = read_files(args.images)
    pixels = decode_pixels(encoded) if args.signature == "serving_default" else None
    if args.protocol == "rest":
        url = rest_url(args.host, args.rest_port, args.model_name, args.model_version)
        body = build_rest_body(args.signature, encoded, pixels)
        if args.dry_run:
            print(f"POST {url}")
            print(json.dumps(_shorten(body, args.full), indent=2))
            return 0
        predictions = predict_rest(url, body, args.timeout)
    else:
        request = build_grpc_request(args.model_name, args.signature, encoded, pixels, args.model_version)
        if args.dry_run:
            print(f"gRPC {args.host}:{args.grpc_port} tensorflow.serving.PredictionService/Predict")
            print(describe_grpc_request(request, args.full))
            return 0
        predictions = predict_grpc(args.host, args.grpc_port, request, args.timeout)
    print_detections(args.images, predictions, args.min_score)
    return 0


if __name__ == "__main__":
    sys.exit(main())
