"""The quickstart: train and evaluate Delta-LLaVA end to end on a CPU with the embedded default."""
