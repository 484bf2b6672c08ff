"""The ``refrnn`` console command: one dispatch table, each subcommand a module with ``main(argv)``.

Subcommands are imported only when run, so ``refrnn --help`` stays as light as ``import refrnn``.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "verify": ("refrnn.verify.cli", "verify an RNN implementation against the reference (`refrnn verify torch|sru|onnxruntime|onnx-reference|keras|all`)"),
    "bench": ("refrnn.bench", "time the fast paths against the reference, plain NumPy and PyTorch; print ratios"),
    "reproduce": ("refrnn.reproduce.cli", "train the seed paper's char-level grid (dense GRU; block-sparse and low-rank z over s): BPC, z-sparsity and speed-up tables, PNG plots"),
    "bench-cuda": ("refrnn.bench.cuda", "time the GPU kernels: SRU bandwidth and fused-step FLOP/s as fractions of the device, vs cuDNN"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {help}" for name, (_, help) in COMMANDS.items()]
        print("usage: refrnn <command> [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nrefrnn: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
