"""Entry point: ``python -m serving`` (TF Serving's flags; see serving/settings.py).

Usage:
  python -m serving --model_name lenet5 --model_base_path models/lenet5 \
      --port 8500 --rest_api_port 8501
"""

from __future__ import annotations

import sys

from serving.observability.logs import configure_logging
from serving.process.supervisor import Supervisor
from serving.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, then run the supervisor until SIGTERM; returns the exit status."""
    settings = load_settings(argv)
    configure_logging(settings.log_level)
    return Supervisor(settings).run()


if __name__ == "__main__":
    sys.exit(main())
