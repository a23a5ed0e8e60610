"""Sends messages over a WebSocket with the websockets client and checks
that each comes back unchanged; prints a JSON line with the round trips.

    python ws_echo.py --url ws://127.0.0.1:10000/models/chat/v1/echo
"""

import argparse
import json
import os
import sys
import time

from websockets.sync.client import connect


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--messages", type=int, default=20)
    args = p.parse_args()
    rtts = []
    with connect(args.url, open_timeout=30, max_size=None) as ws:
        for i in range(args.messages):
            # Text and binary frames, small and large.
            msg = f"message {i}" if i % 2 == 0 else os.urandom(1 << (i % 17))
            start = time.perf_counter()
            ws.send(msg)
            got = ws.recv(timeout=30)
            rtts.append((time.perf_counter() - start) * 1000)
            if got != msg:
                print(json.dumps({"error": f"message {i} came back changed"}))
                sys.exit(1)
    print(json.dumps({"echoed": len(rtts), "max_rtt_ms": round(max(rtts), 2)}))


if __name__ == "__main__":
    main()
