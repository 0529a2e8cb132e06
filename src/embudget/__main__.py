"""``python -m embudget``: the ``embudget`` command, also as torchrun's module
(``torchrun --nproc_per_node=2 -m embudget train ...``, see embudget.training.distributed)."""

import sys

from embudget.cli import main


def _run() -> int:
    try:
        return main()
    finally:
        # leave the process group a torchrun job joined (torch warns at exit otherwise);
        # torch is looked up, not imported, so the torch-free commands stay torch-free
        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


sys.exit(_run())
