"""Asks an Open Inference Protocol server for the digit in an image of
scikit-learn's digits data set, with NVIDIA's tritonclient over HTTP or gRPC,
and prints what it answered as one JSON line. Exits 1 on a wrong class.

    python triton_digits.py --url 127.0.0.1:10000 --protocol grpc --model digits \
        --authority digits.models.local --header x-model=digits --digit 7
"""

import argparse
import json
import sys
import time

import numpy as np
from sklearn.datasets import load_digits


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="host:port of Envoy (or the server)")
    p.add_argument("--protocol", choices=["http", "grpc"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--authority", default="", help="gRPC :authority (HTTP Host) to send instead of the URL's")
    p.add_argument("--header", action="append", default=[], help="name=value, sent with every call")
    p.add_argument("--digit", type=int, default=7)
    p.add_argument("--timeout", type=float, default=90, help="seconds a call may take (a model at zero wakes first)")
    args = p.parse_args()
    headers = dict(h.split("=", 1) for h in args.header)

    images, labels = load_digits(return_X_y=True)
    image = images[list(labels).index(args.digit)].reshape(1, 64).astype(np.float64)

    start = time.monotonic()
    if args.protocol == "http":
        import tritonclient.http as triton

        if args.authority:
            headers["Host"] = args.authority
        client = triton.InferenceServerClient(url=args.url, connection_timeout=args.timeout, network_timeout=args.timeout)
        metadata = client.get_model_metadata(args.model, headers=headers)
        name = metadata["name"]
        inp = triton.InferInput("image", list(image.shape), "FP64")
        inp.set_data_from_numpy(image, binary_data=False)
        out = triton.InferRequestedOutput("predict", binary_data=False)
        result = client.infer(args.model, [inp], outputs=[out], headers=headers)
    else:
        import tritonclient.grpc as triton

        channel_args = [("grpc.default_authority", args.authority)] if args.authority else None
        client = triton.InferenceServerClient(url=args.url, channel_args=channel_args)
        metadata = client.get_model_metadata(args.model, headers=headers, client_timeout=args.timeout)
        name = metadata.name
        inp = triton.InferInput("image", list(image.shape), "FP64")
        inp.set_data_from_numpy(image)
        out = triton.InferRequestedOutput("predict")
        result = client.infer(args.model, [inp], outputs=[out], headers=headers, client_timeout=args.timeout)
    predicted = int(result.as_numpy("predict").reshape(-1)[0])
    print(json.dumps({"metadata_name": name, "predicted": predicted, "want": args.digit,
                      "seconds": round(time.monotonic() - start, 3)}))
    sys.exit(0 if predicted == args.digit and name == args.model else 1)


if __name__ == "__main__":
    main()
