"""`modelcycle serve` with the tabular request path as it was before request rows skipped the DataFrame
(``instances_dataset`` then ``TabularPreprocessor.transform``): the baseline of ``bench_tabular.py``.

Run: python benchmarks/servers/frame_path.py serve REF --port PORT [...]  (the arguments of `modelcycle`)
"""

from __future__ import annotations

from modelcycle import instances
from modelcycle.cli.main import main


class _NotTabular:
    """No preprocessor is one of these, so ``instance_tensors`` takes the general path for tabular rows."""


instances.TabularPreprocessor = _NotTabular  # type: ignore[misc,assignment]
main()
