r"""The parts of vaeflow's benchmark scripts (``scripts/bench.py``, ``scripts/bench_eval.py``):
the machine's limits, the data, the implementations under test, one measurement, and the
tables. Imported with ``scripts/`` on the path, which the scripts put there themselves."""
