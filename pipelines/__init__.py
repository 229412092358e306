"""Config-driven jobs composed from the daskgmm library (read → fit → write → report).

Each pipeline is a plain function ``run(config, *, resume=False, progress=None) ->
dict`` (``progress(init, state)`` is called after every EM iteration) taking a
validated :class:`daskgmm.config.JobConfig`; ``PIPELINES`` maps the config's
``pipeline`` names to them.
"""

from __future__ import annotations

from collections.abc import Callable

from pipelines import cluster, segment_image, select_model

PIPELINES: dict[str, Callable[..., dict]] = {
    "cluster": cluster.run,
    "segment_image": segment_image.run,
    "select_model": select_model.run,
}
