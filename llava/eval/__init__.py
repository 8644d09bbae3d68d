"""Benchmark scorers and submission converters for LLaVA-1.5 evaluation.

Every module here is plain Python (json, re, argparse; pandas only for MMBench) and runs as
``python -m llava.eval.<module> ...`` with the same arguments as upstream LLaVA-1.5. Keep this
file free of imports: the scorers must not pull in torch. See docs/evaluation.md.
"""
