"""The Python onnxruntime peer of `nudge-bench inference`: scores the same artifact on the
same rows, one thread, and prints one JSON object with what it measured.

    python onnxruntime_peer.py MODEL.onnx GOLDEN.json --single N --batch ROWS --rounds R --seconds S
"""

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("golden")
    ap.add_argument("--single", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()

    with open(args.golden) as f:
        rows = np.array([r["features"] for r in json.load(f)["rows"]], dtype=np.float32)
    options = onnxruntime.SessionOptions()
    # The cells score on one thread per session; so does the peer.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])

    def score(x):
        return session.run(["probabilities"], {"features": x})[0]

    singles = [rows[i % len(rows)][None, :] for i in range(args.single)]
    for x in singles[:1000]:
        score(x)
    latencies = []
    for x in singles:
        t = time.perf_counter_ns()
        score(x)
        latencies.append((time.perf_counter_ns() - t) / 1000.0)
    latencies.sort()

    batch = np.ascontiguousarray(np.resize(rows, (args.batch, rows.shape[1])))
    score(batch)
    rates = []
    for _ in range(args.rounds):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            score(batch)
            n += args.batch
        rates.append(n / (time.perf_counter() - start))

    print(
        json.dumps(
            {
                "single_p50_us": latencies[len(latencies) // 2],
                "single_p99_us": latencies[int(len(latencies) * 0.99)],
                "batched_rows_per_s": rates,
                "batched_median": statistics.median(rates),
                "onnxruntime": onnxruntime.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
