"""Config-driven jobs composed from the daskgmm library (read → fit → write → report).

Each pipeline is a module of this package with a plain function ``run(config, *,
resume=False, progress=None) -> dict`` (``progress(init, state)`` is called after
every EM iteration) taking a validated :class:`daskgmm.config.JobConfig`. The
registry :data:`daskgmm.config.PIPELINES` names them and says which module runs
each; :func:`runner` returns that module's ``run`` (modules are imported here by
their names in the code, never by a name read from a file).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from daskgmm.config import PIPELINES
from pipelines import cluster, segment_image, select_model  # noqa: F401


def runner(name: str) -> Callable[..., dict]:
    """The ``run`` function of the pipeline called ``name`` in the registry."""
    return getattr(sys.modules[__name__], PIPELINES[name].module).run
