"""Build the core's Triton kernels for a GPU architecture without a GPU, and print what ptxas says.

    python benchmarks/triton_build.py              # sm_90 (H100 / H200)
    python benchmarks/triton_build.py --arch 80    # sm_80 (A100)

For every block shape the core launches (permutations of 4-1024 slots; pixel-pair sums of
8-32 px regions, all pairs and seams only): registers per thread and spilled bytes, from
Triton's bundled ``ptxas -v``. A kernel that does not build fails here, not on the GPU.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource

from visualmixer.core.triton_kernels import launch_shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10 (default 90)")
    args = parser.parse_args()
    ptxas = get_ptxas(args.arch).path  # (Triton's own lookup: its bundled ptxas, or TRITON_PTXAS_PATH)
    print(f"triton {triton.__version__}, sm_{args.arch}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, kernel, signature, constants in launch_shapes():
            built = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants),
                                   target=GPUTarget("cuda", args.arch, 32))
            path = os.path.join(tmp, "kernel.ptx")
            with open(path, "w") as fh:
                fh.write(built.asm["ptx"])
            arch = f"sm_{args.arch}a" if args.arch >= 90 else f"sm_{args.arch}"
            said = subprocess.run([ptxas, "--gpu-name", arch, "-v", path, "-o", os.path.join(tmp, "k.cubin")],
                                  capture_output=True, text=True, check=True)
            text = said.stdout + said.stderr
            registers = re.search(r"Used (\d+) registers", text)
            spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
            spilled = f"{spills.group(1)}/{spills.group(2)} bytes" if spills else "?"
            used = registers.group(1) if registers else "?"
            print(f"  {label:28s} {used:>4} registers, spill stores/loads {spilled}")


if __name__ == "__main__":
    main()
