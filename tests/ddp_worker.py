"""One torchrun worker for tests/test_distributed.py: `s2s ARGS` (as the CLI takes them), after which
each process saves the weights it ended with to RUN_DIR.rank{RANK}.pt, so that the test can check
that all processes hold the same model (rank 0's last.pt alone cannot show that).

    torchrun --nproc_per_node 2 tests/ddp_worker.py -q train CONFIG --out RUN_DIR [--resume] [--set k=v]
"""
import os
import sys
from pathlib import Path

import torch

from s2s import train as train_lib
from s2s.cli import main

tasks = []
build_task = train_lib.Trainer.build_task
train_lib.Trainer.build_task = lambda *args: tasks.append(build_task(*args)) or tasks[-1]  # keep the model being trained

code = main(sys.argv[1:])
run_dir = Path(sys.argv[sys.argv.index("--out") + 1])
torch.save(tasks[0].model.state_dict(), run_dir.with_name(f"{run_dir.name}.rank{os.environ['RANK']}.pt"))
sys.exit(code)
