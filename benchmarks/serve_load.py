"""The PRM server under load: 1,000 score requests at concurrency 32, then bad requests.

Starts ``prmfactory serve`` for a PRM in a child process on 127.0.0.1 (with an API key), sends
single-solution ``/v1/prm/score`` requests built from toy test problems' reference solutions,
and reports p50 / p99 latency, throughput and errors; then a request without the token, an
oversized one and a malformed one, each with the status it got, and whether the server still
answers afterwards.

Usage: python benchmarks/serve_load.py --prm runs/prm-quality/discriminative-hard [--requests 1000]
       [--concurrency 32] [--backend transformers|vllm]
"""

from __future__ import annotations

import argparse
import json


def main(args) -> dict:
    import httpx

    from prmfactory.serve.client import load_test, running_server
    from prmfactory.toy.problems import generate

    problems = generate(50, "test", 9)
    prompts, responses = [p.text for p in problems], ["\n\n".join(p.reference_steps) for p in problems]
    with running_server(args.prm, api_key="bench", extra_args=["--backend", args.backend]) as url:
        result = load_test(url, prompts, responses, requests=args.requests, concurrency=args.concurrency,
                           api_key="bench")
        auth = {"Authorization": "Bearer bench"}
        faults = {
            "no_token": httpx.post(f"{url}/v1/prm/score", json={"items": []}).status_code,
            "oversized": httpx.post(f"{url}/v1/prm/score", headers=auth,
                                    json={"items": [{"id": 1, "prompt": "p", "steps": ["x" * 5_000_000]}]}).status_code,
            "malformed": httpx.post(f"{url}/v1/prm/score", headers=auth, json={"items": [{"id": 1}]}).status_code,
        }
        after = load_test(url, prompts, responses, requests=32, concurrency=8, api_key="bench")
    return {"backend": args.backend, **result, "faults": faults, "errors_after_faults": after["errors"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prm", required=True)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backend", default="transformers")
    print(json.dumps(main(parser.parse_args()), indent=1))
