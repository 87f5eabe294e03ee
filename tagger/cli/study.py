"""``python train.py study=NAME``: a study of the papers (``conf/study/NAME.yaml``) is one
Hydra multirun; ``StudyReport``, its Hydra callback, writes the sweep's report when it ends.

The report is what ``tagger report SWEEP_DIR`` writes (``tagger.report.write_report``):
``report.md``, ``report.csv`` and ``curves.png`` in the sweep directory, no second command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tagger.report import write_report

log = logging.getLogger(__name__)


class StudyReport(Callback):
    """A Hydra callback (``hydra.callbacks`` of ``conf/study/base/sweep.yaml``): when the
    multirun ends, the report of every job in its sweep directory, failed ones included,
    printed and written there. A report that cannot be written ends the command as any
    error of ``train.py`` does (one line; ``tagger report DIR`` writes it again)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        report = write_report([sweep_dir], sweep_dir)
        print(report.markdown.read_text(), end="")
        log.info(
            "study report: %d configs from %d jobs in %s and %s",
            len(report.table), len(report.jobs), report.markdown, report.csv,
        )  # fmt: skip
