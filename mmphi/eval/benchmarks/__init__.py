"""Public benchmarks read from their official files, asked with LLaVA-1.5's prompts, scored by their own rules.

One module per benchmark (a reader and a scorer, described by a :class:`Benchmark`), the shared record type
and checks in :mod:`~mmphi.eval.benchmarks.common`, VQA answer normalisation in
:mod:`~mmphi.eval.benchmarks.answers`; :mod:`~mmphi.eval.benchmarks.run` answers them for ``mmphi eval
--benchmark NAME``.
"""

from mmphi.eval.benchmarks import gqa, pope, scienceqa, textvqa, vqav2
from mmphi.eval.benchmarks.common import Benchmark, BenchmarkError, Item

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (vqav2.BENCHMARK, gqa.BENCHMARK, pope.BENCHMARK,
                                                        scienceqa.BENCHMARK, textvqa.BENCHMARK)}

__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkError", "Item"]
