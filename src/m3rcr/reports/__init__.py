"""Reports: the benchmark's tables and figures, laid out like the paper's."""
