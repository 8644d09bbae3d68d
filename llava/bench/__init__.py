"""Speed benchmark of the projectors, side by side: ``python -m llava.bench --preset cpu --out DIR``.

Modules: ``presets`` (shapes and sizes), ``speed`` (the measurements), ``machine`` (timing,
memory, machine description), ``report`` (JSON, markdown, chart), ``profile`` (torch.profiler
view of the vision tower and the delta projector). Results live in ``docs/benchmarks/``.
"""
