"""The run ledger: everything a run keeps on disk, the same for the in-process and the Flower engine.

* :mod:`.run_dir`: the experiment's run directory (layout, frozen config and the resume check, sites, metrics,
  summary, predictions), written atomically;
* :mod:`.rounds`: one method's checkpoint and round log (resume, commit a round, stop);
* :mod:`.stopping`: when a round stops a method, and how a round record is written.

Engines drive rounds (sampling, messages, aggregation); they never write files themselves.
"""

from medfed.fl.ledger.rounds import CHECKPOINT, ROUNDS_LOG, MethodLedger, MethodResult, Opened
from medfed.fl.ledger.run_dir import (
    MATCHED_STEP_FILE,
    RunDirectory,
    check_resume_config,
    describe_conditions,
    resolved_config,
    write_csv,
    write_json,
)
from medfed.fl.ledger.stopping import REPEATED_FAILURE_ROUNDS, FailureStreaks, RunStopped, log_record, stop_message

__all__ = [
    "CHECKPOINT", "MATCHED_STEP_FILE", "REPEATED_FAILURE_ROUNDS", "ROUNDS_LOG", "FailureStreaks", "MethodLedger",
    "MethodResult", "Opened", "RunDirectory", "RunStopped", "check_resume_config", "describe_conditions",
    "log_record", "resolved_config", "stop_message", "write_csv", "write_json",
]
