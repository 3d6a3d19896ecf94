"""`python -m sampan.cli`: the Python CLI as the native `sampan` hands calls to it (and as
tests and benches compare it), named `sampan` in its usage and errors."""

from sampan.cli import main

main(prog_name="sampan")
