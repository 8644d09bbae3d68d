"""Writes a run's results: ``results.json``, ``results.md`` (tables) and ``chart.png`` (speed-ups).

``python -m llava.bench.report DIR`` rebuilds the markdown and the chart from ``DIR/results.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable


def _checkpointing_text(value: bool | str) -> str:
    """"on" / "off" / "auto" (results written before the modes existed hold a bool)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def _train_batches(settings: dict) -> str:
    stage1, stage2 = settings.get("stage1_batch"), settings["train_batch"]
    return f"{stage1} (stage 1) / {stage2} (stage 2)" if stage1 and stage1 != stage2 else str(stage2)


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _mib(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} MiB" if value < 10240 else f"{value / 1024:.1f} GiB"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def markdown(data: dict) -> str:
    """The run as markdown: machine and settings, then inference, training, projector and memory tables."""
    machine, settings = data["machine"], data["settings"]
    results, ratios = data["results"], data["ratios"]
    is_cpu = not machine["device"].startswith("cuda")
    base = data["baseline"]
    if is_cpu:
        where = f"- Machine: **{machine['name']}**, torch using {machine['torch_threads']} thread(s)"
    else:
        where = (f"- Machine: **{machine['name']}** ({machine.get('gpu_memory_gib')} GiB, CUDA {machine.get('cuda')}); "
                 f"host {machine['cpu']}, {machine['cpu_cores']} cores, {machine['ram_gib']} GiB RAM")
    load = data["load_average"]
    load_line = (f"- Load average (1/5/15 min) at start {load['start']}, at end {load['end']} "
                 f"on {machine['cpu_cores']} cores; run took {data['runtime_s'] / 60:.1f} min ({data['started']})")
    wait = load.get("wait")
    if wait is not None:
        load_line += (f"; waited {wait['waited_min']} min for a 1-minute load below {wait['threshold']}"
                      + ("" if wait["quiet"] else " -- **the machine did not get quiet; other jobs shared the cores**"))
    lines = [
        f"# Speed: projectors side by side (preset `{data['preset']}`)",
        "",
        where,
        f"- Versions: torch {data['versions']['torch']}, transformers {data['versions']['transformers']}, "
        f"peft {data['versions']['peft']}; attention `{settings['attn_implementation']}`, {settings['dtype']}",
        f"- Shapes: {data['description']}",
        f"- {data['weights']}",
        f"- Timing: {data['timing']}",
        f"- Text: {settings['text_tokens']} text tokens + 1 image per prompt and per stage-2 sample, "
        f"{settings.get('caption_tokens', settings['text_tokens'])} caption tokens + 1 image per stage-1 sample "
        f"(plain template); short answers "
        f"{settings['short_new_tokens']} new tokens, long answers {settings['long_new_tokens']} (forced length); "
        f"training batch {_train_batches(settings)}, AdamW, gradient checkpointing "
        f"{_checkpointing_text(settings['gradient_checkpointing'])}",
        f"- Repeats: warm-up {settings['warmup']}, timed {settings['repeats']} (long answers "
        f"{settings['long_repeats']}, training steps {settings['train_steps']})",
        load_line,
        f"- Ratios are against `{base}` in the same run (higher is better, times as speed-ups).",
    ]
    if is_cpu:
        lines.append("- **CPU: read the ratios.** Absolute times describe this machine only "
                     "(absolute numbers are quoted from GPU runs).")
    lines.append("")

    batches = sorted({int(b) for r in results for b in r["inference"]})
    if batches:
        lines += ["## Inference", ""]
        header = ["setting", "tokens"]
        for b in batches:
            header += [f"TTFT b{b}", f"short-answer samples/s b{b}", f"long-answer samples/s b{b}",
                       f"decode tok/s b{b}"]
        rows = []
        for res in results:
            rat = ratios[res["label"]]
            row = [f"`{res['label']}`", str(res["visual_tokens"])]
            for b in batches:
                inf = res["inference"].get(str(b))
                if inf is None:
                    row += ["-"] * 4
                    continue
                row += [
                    f"{_fmt_time(inf['ttft_s'])} ({_x(rat['ttft'][str(b)])})",
                    f"{_fmt_rate(inf['short_throughput'])} ({_x(rat['short_throughput'][str(b)])})",
                    f"{_fmt_rate(inf['long_throughput'])} ({_x(rat['long_throughput'][str(b)])})",
                    f"{_fmt_rate(inf['decode_tokens_per_s'])} ({_x(rat.get('decode', {}).get(str(b)))})",
                ]
            rows.append(row)
        lines += _table(header, rows) + [""]
        lines += ["End-to-end latency of one `generate` call:", ""]
        header = ["setting"] + [f"short b{b}" for b in batches] + [f"long b{b}" for b in batches]
        rows = []
        for res in results:
            row = [f"`{res['label']}`"]
            row += [_fmt_time(res["inference"].get(str(b), {}).get("short_latency_s")) for b in batches]
            row += [_fmt_time(res["inference"].get(str(b), {}).get("long_latency_s")) for b in batches]
            rows.append(row)
        lines += _table(header, rows) + [""]

        lines += ["## Vision tower and projector inside the time to first token", ""]
        header = ["setting", "projector params"]
        for b in batches:
            header += [f"tower b{b}", f"projector b{b}", f"projector share b{b}"]
        rows = []
        for res in results:
            row = [f"`{res['label']}`", f"{res['params']['projector'] / 1e6:.2f}M"]
            for b in batches:
                inf = res["inference"].get(str(b))
                row += ["-"] * 3 if inf is None else [_fmt_time(inf["tower_s"]), _fmt_time(inf["projector_s"]),
                                                      _pct(inf["projector_share"])]
            rows.append(row)
        lines += _table(header, rows) + [""]

    if any(r["training"] for r in results):
        lines += ["## Training (one optimizer step)", ""]
        header = ["setting", "sequence tokens", "stage 1 samples/s", "stage 2 samples/s", "stage 2 mode",
                  "checkpointing (stage 1 / 2)"]
        rows = []
        for res in results:
            rat = ratios[res["label"]]
            s1, s2 = res["training"].get("stage1"), res["training"].get("stage2")
            rows.append([
                f"`{res['label']}`",
                str((s1 or s2 or {}).get("sequence_tokens", "-")),
                "-" if s1 is None else f"{_fmt_rate(s1['samples_per_s'])} ({_x(rat.get('stage1'))})",
                "-" if s2 is None else f"{_fmt_rate(s2['samples_per_s'])} ({_x(rat.get('stage2'))})",
                "-" if s2 is None else s2["mode"],
                " / ".join(_checkpointing_text(s.get("gradient_checkpointing", settings["gradient_checkpointing"]))
                           if s else "-" for s in (s1, s2)),
            ])
        lines += _table(header, rows) + [""]
        if settings["gradient_checkpointing"] == "auto":
            lines += ["Gradient checkpointing (auto): " + "; ".join(
                f"`{res['label']}` {stage.replace('stage', 'stage ')}: {tr['checkpointing_reason']}"
                for res in results for stage, tr in res["training"].items()) + ".", ""]
        s2 = next((r["training"]["stage2"] for r in results if "stage2" in r["training"]), None)
        if s2 is not None:
            lines += [f"Stage 1: {results[0]['training']['stage1']['trainable']}. Stage 2: {s2['trainable']} "
                      f"({s2.get('mode_reason', '')}).", ""]

    lines += ["## Peak memory", "", f"{data['memory']}.", ""]
    header = ["setting"] + [f"inference b{b}" for b in batches] + ["stage 1", "stage 2"]
    rows = []
    for res in results:
        row = [f"`{res['label']}`"]
        row += [_mib(res["inference"].get(str(b), {}).get("peak_memory_mib")) for b in batches]
        row += [_mib(res["training"].get(s, {}).get("peak_memory_mib")) for s in ("stage1", "stage2")]
        rows.append(row)
    lines += _table(header, rows) + [""]

    if data["targets"]:
        lines += [f"## Targets (`{data['targets'][0]['setting']}` against `{base}`)", ""]
        rows = []
        for t in data["targets"]:
            value = _pct(t["value"]) if t["metric"] == "projector_share" else _x(t["value"])
            rows.append([t["target"], "-" if t["batch"] is None else str(t["batch"]), value,
                         "met" if t["met"] else "**not met**"])
        lines += _table(["target", "batch", "measured", ""], rows) + [""]
    return "\n".join(lines)


def chart(data: dict, path: str | Path) -> None:
    """Grouped bars: each setting's speed-up over the baseline, per metric; dashed line at 1x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, ratios = data["results"], data["ratios"]
    batches = sorted({int(b) for r in results for b in r["inference"]})
    metrics: list[tuple[str, Callable[[dict], float | None]]] = []
    for b in batches:
        metrics.append((f"TTFT\nb{b}", lambda r, b=b: r.get("ttft", {}).get(str(b))))
    for b in batches:
        metrics.append((f"short-answer\nthroughput b{b}", lambda r, b=b: r.get("short_throughput", {}).get(str(b))))
    if batches:
        b = batches[-1]
        metrics.append((f"decode\ntok/s b{b}", lambda r, b=b: r.get("decode", {}).get(str(b))))
    metrics.append(("training\nstage 1", lambda r: r.get("stage1")))
    metrics.append(("training\nstage 2", lambda r: r.get("stage2")))
    labels = [r["label"] for r in results]
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(metrics) + 2), 4.8))
    for i, label in enumerate(labels):
        values = [fn(ratios[label]) or 0.0 for _, fn in metrics]
        xs = [m + (i - (len(labels) - 1) / 2) * width for m in range(len(metrics))]
        bars = ax.bar(xs, values, width, label=label)
        for bar, v in zip(bars, values):
            if v:
                ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                            fontsize=6)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([name for name, _ in metrics], fontsize=8)
    ax.set_ylabel(f"speed-up vs {data['baseline']} (same run)")
    machine = data["machine"]["name"]
    ax.set_title(f"llava.bench preset '{data['preset']}' on {machine}\n(random weights; higher is better)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(data: dict, out_dir: str | Path, with_chart: bool = True) -> dict[str, Path]:
    """Writes results.json, results.md and (unless ``with_chart`` is False) chart.png into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md"}
    paths["json"].write_text(json.dumps(data, indent=2) + "\n")
    text = markdown(data)
    if with_chart:
        paths["png"] = out / "chart.png"
        chart(data, paths["png"])
        text += "\n![speed-ups](chart.png)\n"
    elif (out / "chart.png").is_file():
        # An earlier run's chart would show other results: it goes, and `python -m llava.bench.report
        # DIR` draws this run's later.
        (out / "chart.png").unlink()
    paths["md"].write_text(text)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", help="folder with results.json")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)
    data = json.loads(Path(args.dir, "results.json").read_text())
    for path in write_all(data, args.dir, with_chart=not args.no_chart).values():
        print(path)


if __name__ == "__main__":
    main()
