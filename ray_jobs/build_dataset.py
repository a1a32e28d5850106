"""Entry point of the job: ``python -m ray_jobs.build_dataset CONFIG.yaml [--set k=v ...]``.

The same code runs under ``sg4v run`` (local Ray, or the cluster in RAY_ADDRESS) and under
``ray job submit --working-dir . -- python -m ray_jobs.build_dataset CONFIG.yaml``.
"""

from __future__ import annotations

import sys

from ray_jobs.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
