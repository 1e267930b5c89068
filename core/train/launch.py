"""Starts the ranks of a multi-process run through torchrun (``torch.distributed.run``).

``forgeline run --nproc N`` calls :func:`launch`, which runs
``python -m torch.distributed.run --nproc-per-node N [torchrun options] -m forgeline.core.cli ARGS``
as a child process: the parent stays free of torch.distributed state, the ranks' output goes
straight to the parent's terminal, and the exit code is torchrun's (non-zero when any rank
fails; torchrun then stops the others). Without rendezvous options the run is
``--standalone`` (one machine, a free port); for several machines pass torchrun's own
``--nnodes``, ``--node-rank``, ``--rdzv-backend``, ``--rdzv-endpoint`` and ``--rdzv-id``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from ..errors import InputError

CLI_MODULE = "forgeline.core.cli"

#: torchrun options that say where the ranks meet; without any of them the run is --standalone
_RENDEZVOUS_OPTIONS = frozenset({
    "--standalone", "--nnodes", "--node-rank", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id",
    "--rdzv-conf", "--master-addr", "--master-port",
})
#: the launcher sets the number of ranks per node from --nproc itself
_OWN_OPTIONS = frozenset({"--nproc-per-node"})


def _option_name(arg: str) -> str:
    """``--rdzv_endpoint=host:29400`` -> ``--rdzv-endpoint`` (torchrun takes both spellings)."""
    return arg.split("=", 1)[0].replace("_", "-") if arg.startswith("--") else ""


def torchrun_command(args: Sequence[str], nproc: int, torchrun_args: Sequence[str] = (),
                     module: str = CLI_MODULE) -> list[str]:
    """The command line that starts ``nproc`` ranks of ``python -m MODULE ARGS`` on this node."""
    if nproc < 1:
        raise InputError(f"--nproc: {nproc} is not a number of processes; give 1 or more")
    names = {_option_name(a) for a in torchrun_args}
    clash = sorted(names & _OWN_OPTIONS)
    if clash:
        raise InputError(f"torchrun option {clash[0]}: the number of ranks per node comes from --nproc; "
                         "drop it from the torchrun options")
    rendezvous = [] if names & _RENDEZVOUS_OPTIONS else ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous, "--nproc-per-node", str(nproc),
            *torchrun_args, "-m", module, *args]


def launch(args: Sequence[str], nproc: int, torchrun_args: Sequence[str] = (), module: str = CLI_MODULE) -> int:
    """Run ``nproc`` ranks of ``python -m forgeline.core.cli ARGS`` through torchrun and wait.

    Returns the exit code: 0 when every rank succeeded, non-zero when one failed (or
    128 + signal when torchrun itself was killed by a signal).
    """
    command = torchrun_command(args, nproc, torchrun_args, module)
    env = dict(os.environ)
    # torchrun sets 1 thread per rank when unset (and warns); sharing the cores is a better default
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    returncode = subprocess.run(command, env=env, check=False).returncode
    return returncode if returncode >= 0 else 128 - returncode
