"""The launch gate: ``receval gate --config receval.toml --out DIR``.

* :func:`receval.gate.config.load_config` reads and checks the TOML config;
* :func:`receval.gate.runner.run_gate` computes the results and decides the gates;
* :func:`receval.gate.outputs.write_outputs` writes report.json and the
  rendered artefacts; :func:`~receval.gate.outputs.verify_report` re-hashes
  the inputs a report names.

Exit codes: 0 every gate passes, 1 at least one gate failed, 2 invalid config
or input (or a gate that could not be decided), 3 internal error.
See docs/gate-config.md and docs/report-schema.md.
"""

from receval.gate.config import ConfigError, GateConfig, load_config
from receval.gate.outputs import verify_report, write_outputs
from receval.gate.runner import GateRun, run_gate

__all__ = ["ConfigError", "GateConfig", "GateRun", "load_config", "run_gate", "verify_report", "write_outputs"]
