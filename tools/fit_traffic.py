"""Fit the simulator's legitimate-traffic numbers to public per-client traces.

Reads the traces described in ../shared/data/README.md (ServeGen per-client windows,
Mooncake and Azure request traces), reduces them to a handful of summary numbers
(volume per client per day, burstiness, the diurnal profile, token-length
distributions, prefix reuse) and writes them to src/distillguard/simulate/fitted.json.
Only these numbers are kept in the project, so the simulator runs without the data.

    .venv/bin/python tools/fit_traffic.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import tarfile
import tempfile
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "distillguard" / "simulate" / "fitted.json"
WINDOW = 600  # ServeGen window, seconds


def lognormal(values: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    logs = np.log(np.maximum(values, 1))
    mean = float(np.average(logs, weights=weights))
    std = float(math.sqrt(np.average((logs - mean) ** 2, weights=weights)))
    return {"mu": round(mean, 4), "sigma": round(std, 4), "median": round(math.exp(mean), 1)}


def quantiles(values: np.ndarray) -> dict[str, float]:
    q = np.quantile(values, [0.1, 0.5, 0.9])
    return {"p10": round(float(q[0]), 4), "p50": round(float(q[1]), 4), "p90": round(float(q[2]), 4)}


def servegen_clients(root: Path) -> dict[str, object]:
    volumes, cvs, actives, profiles, peaks = [], [], [], [], []
    for trace in sorted((root / "data" / "language").glob("*/*-trace.csv")):
        rows = [r for r in csv.reader(trace.open()) if r]
        starts = np.array([float(r[0]) for r in rows])
        rates = np.array([float(r[1]) for r in rows])
        cv = np.array([float(r[2]) for r in rows])
        if rates.sum() == 0:
            continue
        days = (starts.max() + WINDOW - starts.min()) / 86400
        volumes.append(rates.sum() * WINDOW / days)
        active = rates > 0
        actives.append(active.mean())
        cvs.append(float(np.median(cv[active])))
        hours = ((starts % 86400) // 3600).astype(int)
        profile = np.bincount(hours, weights=rates, minlength=24)
        profile = profile / profile.sum()
        profiles.append(profile)
        peaks.append(profile.max() * 24)
    volumes_a = np.array(volumes)
    return {
        "clients": len(volumes),
        "requests_per_day": lognormal(volumes_a) | quantiles(volumes_a),
        "active_window_share": quantiles(np.array(actives)),
        "interarrival_cv": quantiles(np.array(cvs)),
        "diurnal_profile_local": [round(float(x), 5) for x in np.mean(profiles, axis=0)],
        "diurnal_peak_to_mean": quantiles(np.array(peaks)),
    }


def servegen_reasoning(root: Path) -> dict[str, object]:
    inputs: Counter[float] = Counter()
    outputs: Counter[float] = Counter()
    ratios = []
    for path in sorted((root / "data" / "reason").glob("*/*-dataset.json")):
        for window in json.loads(path.read_text()).values():
            for key, target in (("input_tokens", inputs), ("output_tokens", outputs)):
                for value, share in ast.literal_eval(window[key]).items():
                    target[float(value)] += share
            ratio = ast.literal_eval(window["reason_ratio"])
            ratios.append(sum(k * v for k, v in ratio.items()) / max(sum(ratio.values()), 1e-9))
    fit = {}
    for name, counter in (("input_tokens", inputs), ("output_tokens", outputs)):
        values = np.array(list(counter))
        fit[name] = lognormal(values, np.array(list(counter.values())))
    fit["reasoning_share_of_output"] = quantiles(np.array(ratios))
    return fit


def azure(path: Path) -> dict[str, object]:
    stamps, context, generated = [], [], []
    with path.open() as handle:
        for row in csv.DictReader(handle):
            stamps.append(datetime.fromisoformat(row["TIMESTAMP"][:26]).timestamp())
            context.append(float(row["ContextTokens"]))
            generated.append(float(row["GeneratedTokens"]))
    gaps = np.diff(np.sort(np.array(stamps)))
    return {
        "requests": len(stamps),
        "input_tokens": lognormal(np.array(context)),
        "output_tokens": lognormal(np.array(generated)),
        "interarrival_cv": round(float(gaps.std() / gaps.mean()), 4),
    }


def mooncake(path: Path) -> dict[str, object]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    first_blocks = Counter(r["hash_ids"][0] for r in records if r["hash_ids"])
    shared = sum(1 for r in records if r["hash_ids"] and first_blocks[r["hash_ids"][0]] > 1)
    return {
        "requests": len(records),
        "input_tokens": lognormal(np.array([r["input_length"] for r in records], float)),
        "output_tokens": lognormal(np.array([r["output_length"] for r in records], float)),
        "share_with_reused_prefix": round(shared / len(records), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    data = Path(parser.parse_args().data)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(data / "servegen" / "servegen_client_traces.tar.gz") as archive:
            archive.extractall(tmp, filter="data")
        root = next(Path(tmp).rglob("data")).parent
        fitted = {
            "source": "fitted by tools/fit_traffic.py from public traces (ServeGen client "
            "windows, Azure LLM inference 2023, Mooncake conversation trace); numbers only",
            "servegen_language_clients": servegen_clients(root),
            "servegen_reasoning": servegen_reasoning(root),
        }
    fitted["azure_code"] = azure(data / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv")
    fitted["azure_conversation"] = azure(data / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv")
    fitted["mooncake_conversation"] = mooncake(data / "mooncake" / "conversation_trace.jsonl")
    OUT.write_text(json.dumps(fitted, indent=1) + "\n")
    print(json.dumps(fitted, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
