"""Serves a digit classifier with Seldon's MLServer (Open Inference Protocol
over HTTP and gRPC), for the demo and the protocol tests (docs/protocols.md).

At start-up it trains a scikit-learn classifier on the digits data set that
scikit-learn ships (8x8 images, 1797 samples: nothing is downloaded), saves
it where MLServer's scikit-learn runtime loads it from, writes MLServer's
settings, and becomes `mlserver start`.

    python mlserver_digits.py --name digits --http-port 8080 --grpc-port 8081
"""

import argparse
import json
import os
import sys
import tempfile

import joblib
from sklearn.datasets import load_digits
from sklearn.svm import SVC


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="digits", help="the model's name in the inference API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--grpc-port", type=int, default=8081)
    p.add_argument("--metrics-port", type=int, default=8082)
    p.add_argument("--dir", default="", help="where to write the model (a new temporary folder when empty)")
    args = p.parse_args()

    root = args.dir or tempfile.mkdtemp(prefix="mlserver-digits-")
    model_dir = os.path.join(root, args.name)
    os.makedirs(model_dir, exist_ok=True)

    images, labels = load_digits(return_X_y=True)
    clf = SVC(gamma=0.001).fit(images, labels)
    joblib.dump(clf, os.path.join(model_dir, "model.joblib"))
    print(f"trained on {len(labels)} digits, accuracy {clf.score(images, labels):.3f} on them", flush=True)

    with open(os.path.join(model_dir, "model-settings.json"), "w") as f:
        json.dump({
            "name": args.name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "v1"},
        }, f)
    with open(os.path.join(root, "settings.json"), "w") as f:
        json.dump({
            "host": args.host,
            "http_port": args.http_port,
            "grpc_port": args.grpc_port,
            "metrics_port": args.metrics_port,
            # One process: the pod's CPU is what the sidecar meters.
            "parallel_workers": 0,
        }, f)

    mlserver = os.path.join(os.path.dirname(sys.executable), "mlserver")
    os.execv(mlserver, [mlserver, "start", root])


if __name__ == "__main__":
    main()
