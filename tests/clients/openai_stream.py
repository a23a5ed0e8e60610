"""Streams a completion with the openai Python client and prints one JSON
line per token (its text and milliseconds since the request was sent), then
a summary line: the tokens, the time to first token and the gaps between
tokens.

    python openai_stream.py --base-url http://127.0.0.1:10000/models/chat/v1 --model ngram --max-tokens 8
"""

import argparse
import json
import time

import openai


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", default="ngram")
    p.add_argument("--prompt", default="A model")
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--repeat", type=int, default=1, help="completions to stream one after another (the summary is of each)")
    p.add_argument("--timeout", type=float, default=90)
    args = p.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key="unused", timeout=args.timeout, max_retries=0)
    for _ in range(args.repeat):
        start = time.perf_counter()
        stream = client.completions.create(model=args.model, prompt=args.prompt, max_tokens=args.max_tokens, stream=True)
        arrivals, text = [], []
        for chunk in stream:
            ms = (time.perf_counter() - start) * 1000
            arrivals.append(ms)
            text.append(chunk.choices[0].text)
            print(json.dumps({"token": chunk.choices[0].text, "ms": round(ms, 2)}), flush=True)
        gaps = [round(b - a, 2) for a, b in zip(arrivals, arrivals[1:])]
        print(json.dumps({"tokens": text, "ttft_ms": round(arrivals[0], 2) if arrivals else None, "gaps_ms": gaps}), flush=True)


if __name__ == "__main__":
    main()
