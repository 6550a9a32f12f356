"""Studies that are not a training run: the input-vs-parameter gradient-penalty inequality."""
